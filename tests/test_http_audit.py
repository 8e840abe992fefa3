"""graphql-http's GraphQL-over-HTTP audit (the spec's reference implementation, pinned in
tools/graphql-http-audit/package-lock.json) against a real ``punchcard serve``: no warning,
no error. Needs Node.js (18+) and npm; ``npm ci`` runs once, when node_modules is missing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.live import serve_env
from tests.processes import ROOT, server

AUDIT = ROOT / "tools" / "graphql-http-audit"


@pytest.mark.parametrize("fast_path", ["1", "0"], ids=["fast-path", "strawberry-view"])
def test_graphql_http_audit_passes_with_no_warnings_or_errors(
    db_url: str, tmp_path: Path, fast_path: str
) -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the audit needs Node.js and npm")
    if not (AUDIT / "node_modules" / "graphql-http").is_dir():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=AUDIT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert installed.returncode == 0, installed.stdout + installed.stderr
    with server(serve_env(db_url, PUNCHCARD_FAST_PATH=fast_path), tmp_path / "serve.log") as url:
        done = subprocess.run(
            [node, "audit.mjs", f"{url}/graphql"],
            cwd=AUDIT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    print(done.stdout, done.stderr)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"graphql-http audit: {summary['total']} audits, {summary['ok']} ok, "
        f"{summary['notice']} notices, {summary['warn']} warnings, {summary['error']} errors"
    )
    failing = [f"{f['status']} {f['id']} {f['name']}: {f['reason']}" for f in summary["failed"]]
    assert summary["error"] == 0 and summary["warn"] == 0, "\n".join(failing)
    assert summary["notice"] == 0, "\n".join(failing)  # the MAYs too: punchcard does them all
    assert done.returncode == 0
