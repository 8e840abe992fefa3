"""The browser surfaces: the live page at ``/`` and GraphiQL at ``/graphiql``.

Both are plain files inside the package (``server/static/``): the page is HTML and a
little JavaScript with no build step; GraphiQL, React, ReactDOM and the graphql-ws client
are vendored minified builds from npm (``server/static/graphiql/VERSIONS.md``). Nothing
is fetched from another host, and the pages' Content-Security-Policy says so to the
browser too: a page that tried would be refused, offline or not.

GraphiQL (the page and its assets) is only routed when ``settings.graphiql_on``.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from punchcard.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
PAGE = STATIC / "page"
GRAPHIQL = STATIC / "graphiql"

# Scripts, styles and connections (HTTP and the WebSocket) only to this server. GraphiQL
# sets inline styles and uses data: URIs for its fonts and icons.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
HTML_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",  # the URL may carry #token=, never sent, but still
    "X-Content-Type-Options": "nosniff",
}


def _html(path: Path) -> Response:
    return FileResponse(path, media_type="text/html; charset=utf-8", headers=HTML_HEADERS)


async def live_page(request: Request) -> Response:
    return _html(PAGE / "index.html")


async def graphiql_page(request: Request) -> Response:
    return _html(GRAPHIQL / "index.html")


def routes(settings: Settings) -> list[BaseRoute]:
    """``/``, ``/static/...`` and, when GraphiQL is on, ``/graphiql`` and its assets."""
    found: list[BaseRoute] = [Route("/", live_page, methods=["GET", "HEAD"])]
    if settings.graphiql_on:
        found += [
            Route("/graphiql", graphiql_page, methods=["GET", "HEAD"]),
            Mount("/static/graphiql", StaticFiles(directory=GRAPHIQL), name="graphiql"),
        ]
    found.append(Mount("/static", StaticFiles(directory=PAGE), name="static"))
    return found


def demo_links(base_url: str, token: str) -> dict[str, str]:
    """The links ``serve --demo`` prints: the live page and GraphiQL, signed in.

    The token rides in the fragment, which the browser never sends to a server; each page
    reads it, keeps it (the live page in localStorage) and removes it from the address bar.
    """
    base = base_url.rstrip("/")
    return {"page": f"{base}/#token={token}", "graphiql": f"{base}/graphiql#token={token}"}
