"""A real headless Chromium for the browser tests: Debian's ``chromium``, driven by
Playwright for Python (which cannot download its own browsers here).

``chromium_path()`` finds the browser, or installs Debian's package when it is missing
and the tests run as root (CI does, on a clean machine), the way
``benchmarks/harness.py`` installs ``wrk``. Otherwise it says why the browser tests
cannot run.
"""

from __future__ import annotations

import os
import shutil
import subprocess

NAMES = ("chromium", "chromium-browser")


class NoBrowser(Exception):
    """No Chromium, and none can be installed here (the reason is the message)."""


def _found() -> str | None:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_path() -> str:
    """The path of a Chromium executable, installing Debian's ``chromium`` if needed."""
    found = _found()
    if found:
        return found
    if os.geteuid() != 0:
        raise NoBrowser("chromium is missing and the tests are not root: apt-get install chromium")
    if shutil.which("apt-get") is None:
        raise NoBrowser("chromium is missing and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise NoBrowser(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    found = _found()
    if not found:
        raise NoBrowser("apt-get installed chromium but no chromium executable is on PATH")
    return found


if __name__ == "__main__":  # python -m tests.browser: install it ahead of a test run
    print(chromium_path())
