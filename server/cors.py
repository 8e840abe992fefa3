"""CORS for browser frontends on other origins (``PUNCHCARD_CORS_ORIGINS``).

Starlette's ``CORSMiddleware``, configured for what the API reads from a browser: the
``Authorization`` bearer token and a JSON ``Content-Type`` (``Accept`` is safelisted), on
GET, POST and the preflight's OPTIONS. No cookies are involved, so credentials stay off
(a script's own ``Authorization`` header needs no ``Access-Control-Allow-Credentials``).
Preflights are cached by the browser for ``MAX_AGE`` seconds.

The one change to Starlette's middleware: a refused preflight is still a 400, but with a
JSON body like every other 4xx of the API, instead of Starlette's ``text/plain``.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from punchcard.settings import Settings

METHODS = ("GET", "POST", "OPTIONS")
HEADERS = ("Authorization", "Content-Type")  # plus the safelisted Accept, Accept-Language...
MAX_AGE = 600  # seconds a browser may reuse a preflight's answer


class JSONErrorCORSMiddleware(CORSMiddleware):
    """``CORSMiddleware`` whose refused preflights answer JSON (``BAD_REQUEST``)."""

    def __init__(self, app: ASGIApp, allow_origins: Collection[str]) -> None:
        super().__init__(
            app,
            # A frozenset: the allowed-origin check runs on every request with an Origin.
            allow_origins=frozenset(allow_origins),
            allow_methods=METHODS,
            allow_headers=HEADERS,
            max_age=MAX_AGE,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        error = {
            "message": f"{bytes(response.body).decode()}: this origin, method or header is "
            "not allowed (PUNCHCARD_CORS_ORIGINS)",
            "extensions": {"code": "BAD_REQUEST"},
        }
        headers = {
            k: v for k, v in response.headers.items() if k not in {"content-type", "content-length"}
        }
        return Response(
            json.dumps({"errors": [error]}),
            status_code=response.status_code,
            headers=headers,
            media_type="application/json",
        )


def cors_middleware(settings: Settings) -> list[Middleware]:
    """The CORS middleware for ``settings``; none when no origin is allowed (same origin
    only: no CORS headers at all, and nothing added to a request's path)."""
    if not settings.cors_origins:
        return []
    return [Middleware(JSONErrorCORSMiddleware, allow_origins=settings.cors_origins)]
