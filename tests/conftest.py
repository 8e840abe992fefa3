"""Test fixtures on real parts: one embedded PostgreSQL per test session, a migrated
template database, and a fresh database (cloned from the template) per test."""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from punchcard.db import integrity
from punchcard.db.embedded import EmbeddedPostgres
from punchcard.db.migrate import upgrade
from punchcard.gql.auth import issue_token
from punchcard.server.app import create_app
from punchcard.settings import Settings

TEMPLATE = "punchcard_template"
# Lines a test wants printed at the end of the run (tests/test_fuzz.py: what it sent and saw).
FUZZ_REPORT = pytest.StashKey[list[str]]()
JWT_SECRET = "test-secret-for-punchcard-tests-0123456789"
_numbers = itertools.count()
# graphql-core is the planner's reference: every query the planner answers is also run on
# graphql-core and the responses compared (gql/differential.py), in process through the
# `settings` fixture and in every `punchcard` subprocess through the environment. Each
# mismatch is a line in MISMATCHES; `planner_agrees_with_graphql_core` fails the test.
MISMATCHES = Path(tempfile.gettempdir()) / f"punchcard-planner-mismatches-{os.getpid()}.jsonl"
os.environ["PUNCHCARD_PLANNER_DIFFERENTIAL"] = "1"
os.environ["PUNCHCARD_PLANNER_MISMATCHES"] = str(MISMATCHES)


def _mismatches() -> list[str]:
    return MISMATCHES.read_text().splitlines() if MISMATCHES.exists() else []


@pytest.fixture(autouse=True)
def planner_agrees_with_graphql_core() -> Iterator[None]:
    """No request of the test, in process or in a subprocess, saw the planner differ."""
    before = len(_mismatches())
    yield
    new = _mismatches()[before:]
    if new:
        pytest.fail("the planner differed from graphql-core:\n" + "\n".join(new))


def database_url(server_url: str, name: str) -> str:
    before, _, query = server_url.partition("?")
    base = before.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded server: started once per test session (or DATABASE_URL if set)."""
    if os.environ.get("PUNCHCARD_TEST_DATABASE_URL"):
        yield os.environ["PUNCHCARD_TEST_DATABASE_URL"]
        return
    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def template_url(pg_server: str) -> str:
    async def create() -> None:
        conn = await asyncpg.connect(pg_server)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
            await conn.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await conn.close()

    asyncio.run(create())
    url = database_url(pg_server, TEMPLATE)
    upgrade(url)
    return url


# After every test that made a database, the ledger's invariants (db/integrity.py) are
# checked on it and any drift fails the test: every test doubles as a check that nothing
# it did skewed the books. PUNCHCARD_TEST_LEDGER_CHECK=0 turns it off;
# PUNCHCARD_TEST_LEDGER_CHECK_SKIP=a,b leaves invariants out; a test that plants drift
# on purpose is marked ``@pytest.mark.drift_planted``.
LEDGER_CHECK = os.environ.get("PUNCHCARD_TEST_LEDGER_CHECK", "1").lower() not in {
    "0",
    "false",
    "no",
    "off",
}
LEDGER_CHECK_SKIP = tuple(
    name.strip()
    for name in os.environ.get("PUNCHCARD_TEST_LEDGER_CHECK_SKIP", "").split(",")
    if name.strip()
)
DRIFT_PLANTED = "drift_planted"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{DRIFT_PLANTED}: the test breaks the ledger on purpose (no ledger check after)"
    )


async def ledger_drifts(url: str) -> list[integrity.Drift]:
    """The invariants on database ``url``, as the test server's superuser (it sees every
    trainer's rows: row-level security does not apply to it)."""
    conn = await asyncpg.connect(url)
    try:
        return await integrity.check(conn, skip=LEDGER_CHECK_SKIP)
    finally:
        await conn.close()


@pytest.fixture
async def db_url(
    pg_server: str, template_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A fresh, migrated database for this test (a copy of the template); its ledger is
    checked after the test (LEDGER_CHECK)."""
    name = f"t_{os.getpid()}_{next(_numbers)}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    finally:
        await admin.close()
    url = database_url(pg_server, name)
    yield url
    try:
        if LEDGER_CHECK and request.node.get_closest_marker(DRIFT_PLANTED) is None:
            drifts = await ledger_drifts(url)
            if drifts:
                lines = "\n".join(f"  [{d.invariant}] {d.line()}" for d in drifts[:50])
                more = f"\n  ... and {len(drifts) - 50} more" if len(drifts) > 50 else ""
                pytest.fail(f"the ledger drifted during the test:\n{lines}{more}", pytrace=False)
    finally:
        admin = await asyncpg.connect(pg_server)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        database_url=db_url,
        jwt_secret=JWT_SECRET,
        pool_max_size=20,
        planner_differential=True,
        planner_mismatches=MISMATCHES,
    )


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for checking what the API wrote."""
    conn = await asyncpg.connect(db_url)
    yield conn
    await conn.close()


@dataclass
class Api:
    """A GraphQL client for the app under test; ``token`` picks the caller."""

    http: httpx.AsyncClient
    settings: Settings
    token: str | None

    def as_trainer(self, subject: str, **claims: Any) -> Api:
        return Api(self.http, self.settings, issue_token(self.settings, subject, **claims))

    def with_token(self, token: str | None) -> Api:
        return Api(self.http, self.settings, token)

    async def post(self, query: str, **variables: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def data(self, query: str, **variables: Any) -> dict[str, Any]:
        """The ``data`` of a call that must succeed."""
        body = await self.post(query, **variables)
        assert "errors" not in body, body["errors"]
        result: dict[str, Any] = body["data"]
        return result

    async def error(self, query: str, **variables: Any) -> str:
        """The ``extensions.code`` of a call that must fail."""
        body = await self.post(query, **variables)
        assert body.get("errors"), body
        code: str = body["errors"][0]["extensions"]["code"]
        return code


@asynccontextmanager
async def in_process(
    settings: Settings, *, subject: str | None = None, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """``create_app(settings)`` with its lifespan running, and a client for it (signed in
    as trainer ``subject`` when given)."""
    app = create_app(settings)
    auth = {"Authorization": f"Bearer {issue_token(settings, subject)}"} if subject else {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://punchcard.test",
            headers={**auth, **(headers or {})},
        ) as http,
    ):
        yield app, http


@pytest.fixture
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(settings) as (_, http):
        yield http


@pytest.fixture
def api(app_client: httpx.AsyncClient, settings: Settings) -> Api:
    """Signed in as trainer A."""
    return Api(app_client, settings, None).as_trainer("trainer-a")


@pytest.fixture
def other(api: Api) -> Api:
    """Signed in as trainer B, who must never see or change A's rows."""
    return api.as_trainer("trainer-b")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(FUZZ_REPORT, [])
    if lines:
        terminalreporter.section("fuzz")
        for line in lines:
            terminalreporter.write_line(line)
