"""The live page at ``/`` and GraphiQL at ``/graphiql``: served from the package's own
files, nothing from another host, GraphiQL only when it is on (tests/test_browser.py
drives both in a real Chromium)."""

from __future__ import annotations

import re
from dataclasses import replace

import httpx

from punchcard.server import pages
from punchcard.settings import Settings
from tests.conftest import in_process

ASSET = re.compile(r'(?:src|href)="([^"]+)"')
EXTERNAL = re.compile(r"""(?:src|href|url)\s*=?\s*\(?["']?(?:https?:)?//""", re.IGNORECASE)
VENDORED = (
    "graphiql.min.js",
    "graphiql.min.css",
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphql-ws.min.js",
)


async def test_the_page_and_its_assets_are_served_from_the_package(
    app_client: httpx.AsyncClient,
) -> None:
    page = await app_client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    assert 'data-testid="connection"' in page.text
    assets = ASSET.findall(page.text)
    assert "/static/app.js" in assets and "/static/live.js" in assets
    for asset in (a for a in assets if a.startswith("/static/")):
        answer = await app_client.get(asset)
        assert answer.status_code == 200, asset
        assert answer.content == (pages.PAGE / asset.removeprefix("/static/")).read_bytes()


async def test_graphiql_and_its_vendored_assets(app_client: httpx.AsyncClient) -> None:
    page = await app_client.get("/graphiql")
    assert page.status_code == 200 and "content-security-policy" in page.headers
    assets = [a for a in ASSET.findall(page.text) if a.startswith("/static/")]
    assert {a.rsplit("/", 1)[1] for a in assets} >= {*VENDORED, "start.js"}
    for asset in assets:
        answer = await app_client.get(asset)
        assert answer.status_code == 200, asset
    script = await app_client.get("/static/graphiql/start.js")
    assert "graphql-ws" in script.text and "wsClient" in script.text


async def test_graphiql_is_not_served_when_it_is_off(settings: Settings) -> None:
    for off in (replace(settings, graphiql=False), replace(settings, env="production")):
        async with in_process(off) as (_, http):
            assert (await http.get("/graphiql")).status_code == 404
            assert (await http.get("/static/graphiql/graphiql.min.js")).status_code == 404
            assert (await http.get("/")).status_code == 200  # the live page stays


def test_no_file_the_pages_load_names_another_host() -> None:
    """What the browser is told to fetch (src, href, CSS url()) stays on this server.
    The vendored bundles mention URLs in comments and error texts; the browser test
    checks what they actually request."""
    for path in [*pages.PAGE.iterdir(), pages.GRAPHIQL / "index.html", pages.GRAPHIQL / "start.js"]:
        text = path.read_text()
        assert not EXTERNAL.search(text), path
    css = (pages.GRAPHIQL / "graphiql.min.css").read_text()
    assert not re.search(r"url\(\s*[\"']?(?:https?:)?//", css)
    assert not re.search(r"@import", css)


def test_vendored_files_are_noted() -> None:
    versions = (pages.GRAPHIQL / "VERSIONS.md").read_text()
    for name in VENDORED:
        assert name in versions, name
        assert (pages.GRAPHIQL / name).stat().st_size > 1000


def test_demo_links_carry_the_token_in_the_fragment() -> None:
    links = pages.demo_links("http://127.0.0.1:8000/", "abc.def.ghi")
    assert links == {
        "page": "http://127.0.0.1:8000/#token=abc.def.ghi",
        "graphiql": "http://127.0.0.1:8000/graphiql#token=abc.def.ghi",
    }
