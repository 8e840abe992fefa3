"""PUNCHCARD_ENV=production refuses the development secret and turns introspection and
GraphiQL off unless asked (hardening: production mode)."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from punchcard.server.app import create_app
from punchcard.settings import DEV_JWT_SECRET, Settings, UnsafeSettings
from tests.conftest import in_process
from tests.processes import child_env, punchcard_command

INTROSPECT = "{ __schema { queryType { name } } }"


def test_production_refuses_the_development_secret(settings: Settings) -> None:
    with pytest.raises(UnsafeSettings, match="JWT_SECRET"):
        create_app(replace(settings, env="production", jwt_secret=DEV_JWT_SECRET))
    create_app(replace(settings, env="development", jwt_secret=DEV_JWT_SECRET))  # fine


def test_serve_in_production_without_a_secret_exits_before_starting_anything(
    tmp_path: Path,
) -> None:
    env = child_env(PUNCHCARD_ENV="production", PUNCHCARD_DATA_DIR=str(tmp_path))
    env.pop("JWT_SECRET", None)
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [*punchcard_command(), "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "refuses the built-in development JWT secret" in done.stderr
    assert not (tmp_path / "pg").exists()  # no database was started


@pytest.fixture(params=[None, True], ids=["default", "introspection-asked-for"])
async def production(
    settings: Settings, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, bool]]:
    chosen = replace(settings, env="production", introspection=request.param)
    async with in_process(chosen, subject="trainer-a") as (_, http):
        yield http, bool(request.param)


async def test_production_turns_introspection_and_graphiql_off_unless_asked(
    production: tuple[httpx.AsyncClient, bool],
) -> None:
    http, asked = production
    answer = (await http.post("/graphql", json={"query": INTROSPECT})).json()
    if asked:
        assert answer["data"]["__schema"]["queryType"]["name"] == "Query"
    else:
        assert answer["data"] is None
        assert answer["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert "introspection" in answer["errors"][0]["message"]
    plain = (await http.post("/graphql", json={"query": "{ __typename me { id } }"})).json()
    assert plain["data"]["__typename"] == "Query"
    page = await http.get("/graphql", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 400  # a GET without a query, like any other
    assert page.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_development_sends_a_browser_to_graphiql(app_client: httpx.AsyncClient) -> None:
    page = await app_client.get("/graphql", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 302
    assert page.headers["location"] == "/graphiql"
    assert "cdn" not in page.text.lower()  # strawberry's CDN GraphiQL is never served
