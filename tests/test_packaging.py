"""The distribution installs one top-level package, ``punchcard``, and nothing else.

It used to install ``gql``, ``db`` and ``resolvers`` at the top level: with PyPI's ``gql``
(a GraphQL client) in the same virtualenv, ``punchcard --help`` died on an import error
and ``pip uninstall gql`` deleted punchcard's files. The test extras install PyPI's
``gql`` on purpose, so the whole suite runs beside it.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.processes import punchcard_command

FOLDERS = ("db", "gql", "live", "resolvers", "server", "sweeper")
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", ".punchcard", "__pycache__", "*.egg-info", "build", ".*_cache"
)


def run(*command: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def installed(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install`` (not editable) of a copy of the working tree, into a bare target."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    shutil.copytree(repo_root, source, symlinks=True, ignore=NOT_COPIED)
    target = base / "site"
    run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
        str(source), cwd=base)  # fmt: skip
    return target


@pytest.fixture(scope="module")
def wheel(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel`` of a copy of the working tree: what PyPI would get."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(repo_root, source, symlinks=True, ignore=NOT_COPIED)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(base / "dist"),
        str(source), cwd=base)  # fmt: skip
    (built,) = (base / "dist").glob("punchcard-*.whl")
    return built


def test_the_wheel_ships_the_pages_and_their_vendored_assets(wheel: Path, repo_root: Path) -> None:
    """The live page and GraphiQL are served from package files, offline: every file
    under server/static is in the wheel, byte for byte."""
    static = repo_root / "server" / "static"
    expected = {p.relative_to(repo_root).as_posix() for p in static.rglob("*") if p.is_file()}
    assert len(expected) >= 10 and "server/static/graphiql/graphiql.min.js" in expected
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in expected:
            packaged = f"punchcard/{name}"
            assert packaged in names, packaged
            assert archive.read(packaged) == (repo_root / name).read_bytes(), packaged


def test_a_real_install_puts_only_punchcard_at_the_top_level(installed: Path) -> None:
    top = sorted(p.name for p in installed.iterdir() if p.name != "bin")
    assert top == ["punchcard", "punchcard-0.1.0.dist-info"]
    for folder in FOLDERS:
        package = installed / "punchcard" / folder
        assert package.is_dir() and not package.is_symlink(), package
        assert (package / "__init__.py").is_file()
    versions = installed / "punchcard" / "db" / "migrations" / "versions"
    assert len(list(versions.glob("0*.py"))) >= 3  # the migrations ship too
    static = installed / "punchcard" / "server" / "static"
    assert (static / "page" / "index.html").is_file()  # and the pages (server/pages.py)
    assert (static / "graphiql" / "graphiql.min.js").is_file()


def test_the_installed_copy_runs_on_its_own(installed: Path, tmp_path: Path) -> None:
    """Imported from the target (not the working tree), it builds the schema and app."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import punchcard, punchcard.server.app as app;"
        "assert punchcard.__file__.startswith(sys.argv[1]), punchcard.__file__;"
        "from punchcard.settings import Settings;"
        "from punchcard.gql.schema import sdl;"
        "print(sdl(app.schema_for(Settings()))[:40])"
    )
    out = run(sys.executable, "-c", script, str(installed), cwd=tmp_path)
    assert "type" in out or "schema" in out or "enum" in out


def test_no_top_level_gql_db_or_resolvers_from_this_distribution(tmp_path: Path) -> None:
    files = importlib.metadata.files("punchcard") or []
    tops = {str(f).split("/")[0] for f in files}
    assert not tops & set(FOLDERS), f"punchcard's RECORD lists {tops & set(FOLDERS)}"
    check = (
        "import importlib.util as u, sys;"
        "names = [n for n in sys.argv[1:] if u.find_spec(n) is not None];"
        "print(','.join(names))"
    )
    # -I: no working directory or PYTHONPATH on sys.path, only what is installed.
    found = run(sys.executable, "-I", "-c", check, *FOLDERS, cwd=tmp_path).strip()
    assert found in ("", "gql"), found
    if found == "gql":  # PyPI's gql, which the test extras install on purpose
        origin = run(sys.executable, "-I", "-c", "import gql; print(gql.__file__)", cwd=tmp_path)
        assert "site-packages" in origin and "punchcard" not in origin


def test_punchcard_works_beside_pypi_gql(repo_root: Path, tmp_path: Path) -> None:
    script = (
        "import gql, punchcard.gql.schema;"
        "from gql import Client, gql as parse;"  # the GraphQL client's API
        "print(gql.__version__, punchcard.gql.schema.__name__)"
    )
    out = run(sys.executable, "-I", "-c", script, cwd=tmp_path)
    version, name = out.split()
    assert int(version.split(".")[0]) >= 4 and name == "punchcard.gql.schema"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    help_text = run(*punchcard_command(), "--help", cwd=tmp_path, env=env)
    assert "serve" in help_text and "sweep" in help_text
    run(*punchcard_command(), "schema", "--check", cwd=repo_root, env=env)
