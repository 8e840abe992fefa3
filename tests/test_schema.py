"""The checked-in artefacts stay true: schema.graphql and the migrations."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from punchcard.db.migrate import sqlalchemy_url
from punchcard.db.tables import metadata
from punchcard.gql.auth import issue_token
from punchcard.gql.schema import sdl
from punchcard.server.app import schema_for
from punchcard.settings import Settings
from tests.conftest import in_process
from tests.processes import punchcard_command


def test_schema_file_is_the_exported_schema(repo_root: Path) -> None:
    assert (repo_root / "schema.graphql").read_text() == sdl(schema_for(Settings())), (
        "schema.graphql drifted: run `punchcard schema > schema.graphql`"
    )


def test_schema_check_command(repo_root: Path, tmp_path: Path) -> None:
    ok = subprocess.run(
        [*punchcard_command(), "schema", "--check"], cwd=repo_root, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    stale = tmp_path / "schema.graphql"
    stale.write_text("type Query { old: Int }\n")
    drift = subprocess.run(
        [*punchcard_command(), "schema", "--check", "--path", str(stale)],
        capture_output=True,
        text=True,
    )
    assert drift.returncode == 1
    assert "differs" in drift.stderr


async def test_migrations_create_exactly_the_tables_of_db_tables(template_url: str) -> None:
    engine = create_async_engine(sqlalchemy_url(template_url), poolclass=NullPool)

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": False}
        )
        return list(compare_metadata(context, metadata))

    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == []


DEEP = "{ me { id } clients { nodes { purchases { client { purchases { id } } } } } }"


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "strawberry-view"])
async def test_the_limits_come_from_the_settings_given_to_create_app(
    settings: Settings, fast_path: bool
) -> None:
    """Not from the environment at import: two apps, two limits, one process."""
    strict = replace(settings, max_query_depth=4, max_aliases=2, fast_path=fast_path)
    loose = replace(settings, fast_path=fast_path)
    bearer = issue_token(settings, "trainer-a")
    answers = {}
    for name, chosen in (("strict", strict), ("loose", loose)):
        async with in_process(chosen) as (_, http):
            for query in (DEEP, "{ a: me { id } b: me { id } c: me { id } }"):
                response = await http.post(
                    "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {bearer}"}
                )
                answers[(name, query)] = response.json()
    assert (
        "exceeds maximum operation depth of 4" in answers[("strict", DEEP)]["errors"][0]["message"]
    )
    assert "errors" not in answers[("loose", DEEP)]
    aliased = "{ a: me { id } b: me { id } c: me { id } }"
    assert "3 aliases found" in answers[("strict", aliased)]["errors"][0]["message"]
    assert "errors" not in answers[("loose", aliased)]
