"""docs/integrators.md works as written: its ``sh`` blocks run, in order, in one bash
session against a real ``punchcard serve --demo``, and every step that says it needs an
answer (``jq -e``) gets one."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.live import serve_env, token
from tests.processes import ROOT, server

DOC = ROOT / "docs" / "integrators.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def script() -> str:
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 8, "the guide lost its examples"
    return "set -euo pipefail\n" + "\n".join(
        f"echo '--- step {n}'\n{block}" for n, block in enumerate(blocks, 1)
    )


@pytest.mark.skipif(not (shutil.which("jq") and shutil.which("curl")), reason="needs curl, jq")
def test_every_example_runs_against_the_demo(db_url: str, tmp_path: Path) -> None:
    with server(serve_env(db_url), tmp_path / "serve.log", "--demo") as base:
        env = {**serve_env(db_url), "BASE": base, "TOKEN": token("demo-trainer")}
        done = subprocess.run(
            ["bash", "-c", script()],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count("--- step") == len(BLOCK.findall(DOC.read_text()))
    assert '"code": "NO_SESSIONS_REMAINING"' in output  # the refusal shown is the real one
    assert '"FORBIDDEN"' in output and '"UNAUTHENTICATED"' in output
    assert "first: " in output and "retry: " in output


def test_the_guide_hard_codes_no_ids_or_dates() -> None:
    """Ids are read from the demo data and dates computed, so the guide does not age."""
    text = "\n".join(BLOCK.findall(DOC.read_text()))
    assert not re.search(r"\b(cli|pur|bkg|key)_\d+", text)
    assert not re.search(r"20\d\d-\d\d-\d\d", text)
