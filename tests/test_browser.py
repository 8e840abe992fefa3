"""The live page and GraphiQL in a real headless Chromium (Debian's, driven by
Playwright; tests/browser.py installs it when missing), against real ``punchcard serve``
processes and PostgreSQL.

On failure each open page is saved as a screenshot; the failure names the folder.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    async_playwright,
    expect,
)

from tests.browser import NoBrowser, chromium_path
from tests.helpers import CREATE_BOOKING, CREATE_CLIENT, SELL, USE, iso, row_id
from tests.live import Http, http_client, serve_env, token
from tests.processes import free_port, server, start, stop, wait_healthy

LIVE = 1_000  # ms: a change in one tab shows in the other within a second
RECONNECT = 30_000  # ms: backoff tops out at 15 s (server/static/page/live.js)
PONG = 15_000  # ms: a ping unanswered for 10 s closes the socket (live.js)
# The network "unplugged": no host name resolves, except the server's loopback address.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@pytest.fixture(scope="session")
def chromium() -> str:
    try:
        return chromium_path()
    except NoBrowser as reason:
        pytest.skip(f"no Chromium for the browser tests: {reason}")


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=[OFFLINE])
        try:
            yield launched
        finally:
            await launched.close()


class Recorder:
    """Every request and WebSocket the pages of a context open, and uncaught errors."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.urls: list[str] = []
        self.errors: list[str] = []
        self.pages: list[Page] = []
        context.on("request", lambda request: self.urls.append(request.url))
        context.on("page", self.watch)

    def watch(self, page: Page) -> None:
        self.pages.append(page)
        page.on("websocket", lambda ws: self.urls.append(ws.url))
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))

    def hosts(self) -> set[str]:
        return {urlsplit(url).netloc for url in self.urls if not url.startswith("data:")}


@asynccontextmanager
async def recorded(browser: Browser, artifacts: Path) -> AsyncIterator[Recorder]:
    """A browser context (its own localStorage) whose pages are screenshotted if the
    block fails."""
    context = await browser.new_context(timezone_id="UTC", viewport={"width": 1100, "height": 900})
    recorder = Recorder(context)
    try:
        yield recorder
    except BaseException as failure:
        artifacts.mkdir(parents=True, exist_ok=True)
        for number, page in enumerate(recorder.pages):
            if not page.is_closed():
                await page.screenshot(path=artifacts / f"page-{number}.png", full_page=True)
        (artifacts / "requests.txt").write_text("\n".join(recorder.urls + recorder.errors))
        failure.add_note(f"browser screenshots and requests: {artifacts}")
        raise
    finally:
        await context.close()


class Serve:
    """``punchcard serve`` on a fixed port, so it can be killed and started again."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log, self.port = env, log, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start(["serve", "--port", str(self.port)], self.env, self.log)
        wait_healthy(self.process, self.url, self.log)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the sockets, as when a machine or the network dies."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: its sockets stay open but nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[Serve]:
    serve = Serve(env, log)
    serve.start()
    try:
        yield serve
    finally:
        serve.stop()


async def seed(http: Http, name: str, total: int, *, booked: bool = False) -> dict[str, str]:
    """A client with a package (and a booking on it, early today, UTC)."""
    client_id = (await http.data(CREATE_CLIENT, name=name))["createClient"]["id"]
    expires = iso(datetime.now(UTC) + timedelta(days=30))
    purchase = (await http.data(SELL, client=client_id, total=total, expires=expires))[
        "sellPackage"
    ]["id"]
    ids = {"client": client_id, "purchase": purchase}
    if booked:
        today = datetime.now(UTC).replace(hour=0, minute=5, second=0, microsecond=0)
        created = await http.data(
            CREATE_BOOKING,
            client=client_id,
            purchase=purchase,
            auto=None,
            start=iso(today),
            end=iso(today + timedelta(minutes=45)),
        )
        ids["booking"] = created["createBooking"]["id"]
    return ids


@asynccontextmanager
async def all_at_once(tabs: list[Page]) -> AsyncIterator[None]:
    """Hold each tab's next POST /graphql until every tab has sent one, then let them
    all go to the server together."""
    held: list[Route] = []
    everyone = asyncio.Event()

    async def hold(route: Route) -> None:
        held.append(route)
        if len(held) == len(tabs):
            everyone.set()
        await everyone.wait()
        await route.continue_()

    for tab in tabs:
        await tab.route("**/graphql", hold, times=1)
    yield
    await asyncio.wait_for(everyone.wait(), 10)


async def open_live_page(recorder: Recorder, url: str) -> Page:
    page = await recorder.context.new_page()
    await page.goto(url)
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    return page


async def test_two_tabs_stay_in_step_through_clicks_refusals_and_a_server_restart(
    browser: Browser, db: asyncpg.Connection, db_url: str, tmp_path: Path
) -> None:
    bearer = token("trainer-browser")
    env = serve_env(db_url)
    with (
        serving(env, tmp_path / "serve.log") as serve,
        server(env, tmp_path / "other.log") as other,  # the same database, another process
    ):
        async with http_client(other, bearer) as http, recorded(browser, tmp_path / "art") as rec:
            ada = await seed(http, "Ada Lovelace", 10, booked=True)
            bob = await seed(http, "Bob Last-Session", 1)
            # Tab A logs in through the link's #token=; tab B finds it in localStorage.
            a = await open_live_page(rec, f"{serve.url}/#token={bearer}")
            assert "token" not in a.url  # the token left the address bar
            b = await open_live_page(rec, f"{serve.url}/")
            remaining = f"remaining-{ada['purchase']}"
            for tab in (a, b):
                await expect(tab.get_by_test_id(remaining)).to_have_text("10")
                await expect(tab.get_by_test_id("trainer")).to_have_text(re.compile(r"\S"))

            # "Use 1 Session" in A: B shows the new count within a second.
            await a.get_by_test_id(f"use-{ada['purchase']}").click()
            await expect(b.get_by_test_id(remaining)).to_have_text("9", timeout=LIVE)
            await expect(a.get_by_test_id(remaining)).to_have_text("9", timeout=LIVE)
            row = f'[data-booking="{ada["booking"]}"]'  # the calendar follows the package
            await expect(b.locator(row)).to_contain_text("9 left", timeout=LIVE)

            # "Complete" in both tabs at once charges the booking once. Each tab's POST is
            # held until the other's has been sent too, so both reach the server together.
            booking = ada["booking"]
            async with all_at_once([a, b]):
                await a.get_by_test_id(f"complete-{booking}").click()
                await b.get_by_test_id(f"complete-{booking}").click()
            for tab in (a, b):
                await expect(tab.get_by_test_id(f"state-{booking}")).to_have_text("completed")
                await expect(tab.get_by_test_id(remaining)).to_have_text("8")
            charges = await db.fetch(
                "SELECT delta, source FROM session_ledger WHERE booking_id = $1 AND delta <> 0",
                row_id(booking),
            )  # (its HOLD entry moved no used session)
            assert [(c["delta"], c["source"]) for c in charges] == [(1, "CALENDAR")]
            used = "SELECT sessions_used FROM purchases WHERE id = $1"
            assert await db.fetchval(used, row_id(ada["purchase"])) == 2

            # A refusal is shown as such, and changes nothing.
            bob_left = f"remaining-{bob['purchase']}"
            await a.get_by_test_id(f"use-{bob['purchase']}").click()
            await expect(b.get_by_test_id(bob_left)).to_have_text("0", timeout=LIVE)
            await a.get_by_test_id(f"use-{bob['purchase']}").click()
            await expect(a.get_by_test_id("notice")).to_contain_text("NO_SESSIONS_REMAINING")
            await expect(a.get_by_test_id("notice")).to_contain_text("No sessions left")
            assert await db.fetchval(used, row_id(bob["purchase"])) == 1

            # The server dies; a change happens through the other process meanwhile; the
            # server comes back on the same port. Both tabs reconnect by themselves and
            # catch up from their cursors.
            serve.kill()
            for tab in (a, b):
                await expect(tab.get_by_test_id("connection")).to_have_attribute(
                    "data-state", "offline"
                )
            await http.data(USE, id=ada["purchase"], key="while-the-tabs-were-away")
            serve.start()
            for tab in (a, b):
                await expect(tab.get_by_test_id("connection")).to_have_attribute(
                    "data-state", "live", timeout=RECONNECT
                )
                await expect(tab.get_by_test_id(remaining)).to_have_text("7", timeout=LIVE)
            await b.get_by_test_id(f"use-{ada['purchase']}").click()
            for tab in (a, b):
                await expect(tab.get_by_test_id(remaining)).to_have_text("6", timeout=LIVE)

            # A socket that died silently (a laptop asleep, a dropped Wi-Fi: the server is
            # frozen here, so nothing closes) is noticed by an unanswered ping. The tab
            # pings when it is shown again; it goes offline, and back once there is an
            # answer.
            serve.freeze()
            try:
                await a.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
                await expect(a.get_by_test_id("connection")).not_to_have_attribute(
                    "data-state", "live", timeout=PONG
                )
            finally:
                serve.thaw()
            await expect(a.get_by_test_id("connection")).to_have_attribute(
                "data-state", "live", timeout=RECONNECT
            )
            await a.get_by_test_id(f"use-{ada['purchase']}").click()
            for tab in (a, b):
                await expect(tab.get_by_test_id(remaining)).to_have_text("5", timeout=LIVE)

            # Nothing missed, nothing shown twice: each tab lists every ledger row once.
            # (the booking's HOLD entry came before the tabs opened: they list what came live)
            ledger = await db.fetchval(
                "SELECT count(*) FROM session_ledger WHERE kind IN ('USE', 'RELEASE')"
            )
            assert ledger == 6  # A's use, the charge, Bob's, the one away, B's use, A's
            for tab in (a, b):
                await expect(tab.locator("[data-entry]")).to_have_count(ledger)
                entries = await tab.locator("[data-entry]").evaluate_all(
                    "items => items.map(item => item.dataset.entry)"
                )
                assert len(set(entries)) == ledger, entries

            assert rec.hosts() == {f"127.0.0.1:{serve.port}"}, rec.urls
            assert not rec.errors, rec.errors


async def run_in_graphiql(page: Page, document: str, name: str) -> None:
    """Put ``document`` (an operation called ``name``) in the editor and run it, once
    GraphiQL has read it (its tab takes the operation's name)."""
    await page.locator(".graphiql-query-editor .CodeMirror").evaluate(
        "(element, text) => element.CodeMirror.setValue(text)", document
    )
    await expect(page.locator(".graphiql-tabs")).to_contain_text(name)
    await page.locator(".graphiql-execute-button").click()


async def response_text(page: Page) -> str:
    text: str = await page.locator(".graphiql-response .CodeMirror").evaluate(
        "element => element.CodeMirror.getValue()"
    )
    return text


async def wait_for_response(page: Page, *parts: str, timeout: float = 10) -> str:
    async with asyncio.timeout(timeout):
        while True:
            text = await response_text(page)
            if all(part in text for part in parts):
                return text
            await asyncio.sleep(0.05)


async def test_offline_the_page_logs_in_and_graphiql_runs_a_query_and_a_subscription(
    browser: Browser, db_url: str, tmp_path: Path
) -> None:
    bearer = token("trainer-offline")
    with server(serve_env(db_url), tmp_path / "serve.log") as url:
        async with http_client(url, bearer) as http, recorded(browser, tmp_path / "art") as rec:
            ada = await seed(http, "Ada Lovelace", 10)
            context = rec.context

            # Logging in by pasting a token; a bad one is refused plainly.
            page = await context.new_page()
            await page.goto(f"{url}/")
            await expect(page.get_by_test_id("login")).to_be_visible()
            await page.get_by_label("Token").fill("not-a-token")
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_test_id("notice")).to_contain_text("refused")
            await expect(page.get_by_test_id("login")).to_be_visible()
            await page.get_by_label("Token").fill(bearer)
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
            await expect(page.get_by_test_id(f"remaining-{ada['purchase']}")).to_have_text("10")

            # GraphiQL: a query over HTTP...
            graphiql = await context.new_page()
            await graphiql.goto(f"{url}/graphiql#token={bearer}")
            assert "token" not in graphiql.url
            await expect(graphiql.locator(".graphiql-query-editor .CodeMirror")).to_be_visible()
            headers = await graphiql.locator(".graphiql-editor-tool .CodeMirror").evaluate_all(
                "editors => editors.map(e => e.CodeMirror.getValue()).join('\\n')"
            )
            assert f"Bearer {bearer}" in headers
            await run_in_graphiql(graphiql, "query Mine { clients { nodes { name } } }", "Mine")
            await wait_for_response(graphiql, '"name": "Ada Lovelace"')

            # ...and a subscription over the WebSocket, which follows a change.
            subscription = (
                f'subscription Live {{ purchaseUpdated(purchaseId: "{ada["purchase"]}") '
                "{ revision purchase { sessionsRemaining } } }"
            )
            await run_in_graphiql(graphiql, subscription, "Live")
            await wait_for_response(graphiql, '"sessionsRemaining": 10', '"revision": 0')
            await http.data(USE, id=ada["purchase"])
            await wait_for_response(graphiql, '"sessionsRemaining": 9', '"revision": 1')
            await expect(page.get_by_test_id(f"remaining-{ada['purchase']}")).to_have_text("9")

            host = urlsplit(url).netloc
            assert rec.hosts() == {host}, rec.urls
            sockets = [u for u in rec.urls if u.startswith("ws")]
            assert sockets and set(sockets) == {f"ws://{host}/graphql"}, sockets
            assert any(u.endswith("/static/graphiql/graphiql.min.js") for u in rec.urls)
            assert not rec.errors, rec.errors
