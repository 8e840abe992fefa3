"""punchcard's server with a benchmark-only probe: where a request's time goes.

The same app and protocol as ``punchcard serve`` (one worker), plus a raw ASGI middleware
that keeps, per HTTP request, its time in the app and how much of it the process spent in
collections, and ``gc.callbacks`` timing every collection (generation, pause, objects
collected). ``GET /probe`` returns both as
JSON and starts over. Nothing here is part of punchcard: benchmarks/tail.py runs it.

``--without observe|cors|slow_clients|probe`` takes a layer off (benchmarks/layers.py).

    python -m benchmarks.probe_server --port 8123 [--without LAYER ...]
    (DATABASE_URL, PUNCHCARD_* as usual)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from starlette.middleware import Middleware

from punchcard.server.app import create_app
from punchcard.server.cors import JSONErrorCORSMiddleware
from punchcard.server.observe import Observe
from punchcard.server.slow_clients import http_protocol
from punchcard.settings import Settings

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

pauses: list[tuple[int, float, int]] = []  # (generation, seconds, collected)
requests: list[tuple[float, float]] = []  # per request: seconds in the app, of which in GC
_started: list[float] = [0.0]
_paused = [0.0]  # seconds in collections since the process started
# PROBE_GC_THRESHOLD="a,b,c": thresholds to try instead of the server's (set on the first
# request, after the lifespan has set its own).
_override = tuple(int(x) for x in os.environ.get("PROBE_GC_THRESHOLD", "").split(",") if x)


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        took = time.perf_counter() - _started[0]
        _paused[0] += took
        pauses.append((info["generation"], took, info["collected"]))


class Probe:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/probe":
            body = json.dumps(
                {"gc": pauses, "requests": requests, "thresholds": gc.get_threshold()}
            ).encode()
            pauses.clear()
            requests.clear()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        if _override and gc.get_threshold() != _override:  # after the lifespan's tuning
            gc.set_threshold(*_override)
        started, paused = time.perf_counter(), _paused[0]
        try:
            await self.app(scope, receive, send)
        finally:
            requests.append((time.perf_counter() - started, _paused[0] - paused))


# Layers ``--without`` can take off (benchmarks/layers.py): the middleware classes
# create_app installs, and the HTTP protocol with the header deadline.
MIDDLEWARE = {"observe": Observe, "cors": JSONErrorCORSMiddleware}
LAYERS = (*MIDDLEWARE, "slow_clients", "probe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--without", action="append", default=[], choices=LAYERS)
    args = parser.parse_args()
    settings = Settings.from_env()
    probe = "probe" not in args.without
    if probe:
        gc.callbacks.append(_on_gc)
    app = create_app(settings, middleware=[Middleware(Probe)] if probe else [])
    off = {MIDDLEWARE[name] for name in args.without if name in MIDDLEWARE}
    # Starlette builds its middleware stack on the first call: dropping entries now works.
    app.user_middleware = [m for m in app.user_middleware if m.cls not in off]
    plain = "slow_clients" in args.without
    config = uvicorn.Config(
        app,
        port=args.port,
        loop="uvloop",
        http="httptools" if plain else http_protocol(settings),
        ws="websockets-sansio",
        log_config=None,
        log_level=None,
        access_log=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
