"""CORS for browser frontends on other origins (``PUNCHCARD_CORS_ORIGINS``): allowed origins
get the headers on every route, refused ones and an unset setting get none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from punchcard.gql.auth import issue_token
from punchcard.server.app import create_app
from punchcard.settings import Settings
from tests.conftest import in_process
from tests.live import serve_env, token
from tests.processes import server

APP = "https://calendar.example"
OTHER = "https://evil.example"
QUERY = {"query": "{ me { id } }"}


def preflight(origin: str, headers: str = "authorization,content-type") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers,
    }


def cors_headers(answer: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k.startswith("access-control-")}


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    chosen = replace(settings, cors_origins=(APP, "http://localhost:5173"))
    async with in_process(chosen, subject="trainer-a") as (_, client):
        yield client


async def test_a_preflight_from_an_allowed_origin_is_answered_and_cached(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.options("/graphql", headers=preflight(APP))
    assert answer.status_code == 200
    allowed = cors_headers(answer)
    assert allowed["access-control-allow-origin"] == APP
    assert allowed["access-control-allow-methods"] == "GET, POST, OPTIONS"
    headers = {h.strip().lower() for h in allowed["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "accept"} <= headers
    assert allowed["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in allowed  # bearer tokens, no cookies


async def test_requests_from_an_allowed_origin_carry_the_headers_on_every_route(
    http: httpx.AsyncClient,
) -> None:
    post = await http.post("/graphql", json=QUERY, headers={"Origin": APP})
    assert post.status_code == 200
    assert post.json()["data"]["me"]["id"].startswith("trn_")
    assert post.headers["access-control-allow-origin"] == APP
    assert "origin" in post.headers["vary"].lower()
    get = await http.get("/graphql", params=QUERY, headers={"Origin": APP})
    assert get.status_code == 200
    assert get.headers["access-control-allow-origin"] == APP
    refused = await http.post("/graphql", json=[QUERY], headers={"Origin": APP})  # a batch
    assert refused.status_code == 400
    assert refused.headers["access-control-allow-origin"] == APP  # the browser may read why
    for path in ("/healthz", "/nowhere"):
        other = await http.get(path, headers={"Origin": "http://localhost:5173"})
        assert other.headers["access-control-allow-origin"] == "http://localhost:5173"


async def test_a_refused_origin_gets_no_cors_headers(http: httpx.AsyncClient) -> None:
    answer = await http.options("/graphql", headers=preflight(OTHER))
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    post = await http.post("/graphql", json=QUERY, headers={"Origin": OTHER})
    assert post.status_code == 200  # the server answers; the browser keeps it from the page
    assert "access-control-allow-origin" not in post.headers


async def test_a_preflight_for_an_unlisted_header_or_method_is_refused(
    http: httpx.AsyncClient,
) -> None:
    header = await http.options("/graphql", headers=preflight(APP, "x-anything"))
    assert header.status_code == 400
    method = await http.options(
        "/graphql", headers={"Origin": APP, "Access-Control-Request-Method": "DELETE"}
    )
    assert method.status_code == 400
    assert "headers" in header.json()["errors"][0]["message"]
    assert "method" in method.json()["errors"][0]["message"]


async def test_unset_means_same_origin_only_no_cors_headers(settings: Settings) -> None:
    assert settings.cors_origins == ()
    async with in_process(settings, subject="trainer-a") as (_, http):
        answer = await http.options("/graphql", headers=preflight(APP))
        assert answer.status_code == 405  # no preflight handling at all
        assert cors_headers(answer) == {}
        post = await http.post("/graphql", json=QUERY, headers={"Origin": APP})
        assert post.status_code == 200
        assert cors_headers(post) == {}


async def test_any_origin(settings: Settings) -> None:
    async with in_process(replace(settings, cors_origins=("*",))) as (_, http):
        answer = await http.options("/graphql", headers=preflight(OTHER))
        assert answer.headers["access-control-allow-origin"] == "*"
        post = await http.post("/graphql", json=QUERY, headers={"Origin": OTHER})
        assert post.headers["access-control-allow-origin"] == "*"


class Refuser:
    """A caller middleware that refuses some requests itself and notes what it saw."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["method"])
            if scope["query_string"] == b"limited":
                await JSONResponse({"errors": [{"message": "slow down"}]}, 429)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


@asynccontextmanager
async def with_middleware(settings: Settings, seen: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, middleware=[Middleware(Refuser, seen=seen)])
    auth = {"Authorization": f"Bearer {issue_token(settings, 'trainer-a')}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers=auth
        ) as http,
    ):
        yield http


async def test_cors_wraps_the_callers_middleware(settings: Settings) -> None:
    seen: list[str] = []
    async with with_middleware(replace(settings, cors_origins=(APP,)), seen) as http:
        answer = await http.options("/graphql", headers=preflight(APP))
        assert answer.status_code == 200
        assert seen == []  # a preflight is answered before the caller's middleware runs
        limited = await http.post("/graphql?limited", json=QUERY, headers={"Origin": APP})
        assert limited.status_code == 429
        assert limited.headers["access-control-allow-origin"] == APP
        post = await http.post("/graphql", json=QUERY, headers={"Origin": APP})
        assert post.json()["data"]["me"]["id"].startswith("trn_")
        assert seen == ["POST", "POST"]


def test_the_setting_is_read_from_the_environment() -> None:
    env = {"PUNCHCARD_CORS_ORIGINS": " https://App.example/ ,http://localhost:5173,, "}
    assert Settings.from_env(env).cors_origins == ("https://app.example", "http://localhost:5173")
    assert Settings.from_env({}).cors_origins == ()
    assert Settings.from_env({"PUNCHCARD_CORS_ORIGINS": "*"}).cors_origins == ("*",)
    for wrong in ("app.example", "https://app.example/path", "https://"):
        with pytest.raises(ValueError, match="PUNCHCARD_CORS_ORIGINS"):
            Settings.from_env({"PUNCHCARD_CORS_ORIGINS": wrong})


async def test_punchcard_serve_reads_the_origins(db_url: str, tmp_path: Path) -> None:
    env = serve_env(db_url, PUNCHCARD_CORS_ORIGINS=f"{APP}, http://localhost:5173")
    with server(env, tmp_path / "serve.log") as url:
        async with httpx.AsyncClient(base_url=url) as http:
            answer = await http.options("/graphql", headers=preflight(APP))
            assert answer.status_code == 200
            assert answer.headers["access-control-allow-origin"] == APP
            post = await http.post(
                "/graphql",
                json=QUERY,
                headers={"Origin": APP, "Authorization": f"Bearer {token('cors')}"},
            )
            assert post.headers["access-control-allow-origin"] == APP
            assert post.json()["data"]["me"]["id"].startswith("trn_")
            refused = await http.options("/graphql", headers=preflight(OTHER))
            assert refused.status_code == 400
            assert "access-control-allow-origin" not in refused.headers
