"""Make docs/live-page.png: the live page with ``serve --demo``'s data, in headless Chromium.

    .venv/bin/python docs/screenshot.py [output.png]

It starts ``punchcard serve --demo`` on a free port with a fresh embedded PostgreSQL in
a temporary folder, opens the ``Page:`` link it prints, uses one session, completes
today's first booking (so the page shows a change), takes the screenshot and stops the
server. Chromium is Debian's (installed when missing, as for tests/test_browser.py).
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.async_api import async_playwright, expect  # noqa: E402

from tests.browser import chromium_path  # noqa: E402
from tests.processes import child_env, free_port, start, stop, wait_healthy  # noqa: E402


async def shoot(link: str, output: Path) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path())
        context = await browser.new_context(
            viewport={"width": 1100, "height": 1250}, timezone_id="UTC", locale="en-GB"
        )
        page = await context.new_page()
        await page.goto(link)
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
        await page.get_by_role("button", name="Use 1 Session: Grace Hopper").click()
        await page.get_by_test_id("today").get_by_role("button", name="Complete").first.click()
        await expect(page.locator("[data-entry]")).to_have_count(2)
        await page.screenshot(path=output)
        await browser.close()


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "live-page.png"
    with tempfile.TemporaryDirectory(prefix="punchcard-screenshot-") as folder:
        log = Path(folder) / "serve.log"
        port = free_port()
        env = child_env(PUNCHCARD_DATA_DIR=str(Path(folder) / "data"))
        env.pop("DATABASE_URL", None)
        process = start(["serve", "--demo", "--port", str(port)], env, log)
        try:
            wait_healthy(process, f"http://127.0.0.1:{port}", log, timeout=120)
            link = re.search(r"^Page:\s+(\S+)", log.read_text(), re.MULTILINE)
            assert link, log.read_text()
            asyncio.run(shoot(link.group(1), output))
        finally:
            stop(process)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
