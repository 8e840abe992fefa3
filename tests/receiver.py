"""A real HTTP receiver for webhook tests: a threaded ``http.server`` on 127.0.0.1 that
keeps every request it got and answers with the status the test sets (or holds requests
until released, to catch a sweeper mid-delivery)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    port: int
    status: int = 200
    hold: threading.Event | None = None  # while set to an unset Event, requests wait
    received: list[Received] = field(default_factory=list)
    arrived: int = 0  # requests that reached the handler (answered or still held)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def delivered(self) -> list[Received]:
        return [r for r in self.requests() if 200 <= r.answered < 300]

    def ids(self) -> Counter[str]:
        """How often each webhook-id was answered with a 2xx."""
        return Counter(r.headers["webhook-id"] for r in self.delivered())

    def verified(self, secret: str) -> list[Any]:
        """Every 2xx-answered request, verified with the standardwebhooks library."""
        return [Webhook(secret).verify(r.body, r.headers) for r in self.delivered()]


@contextmanager
def receiving(receiver: Receiver) -> Iterator[Receiver]:
    """Serve ``receiver`` on its port until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with receiver.lock:
                receiver.arrived += 1
            if receiver.hold is not None:
                receiver.hold.wait(60)
            status = receiver.status
            with receiver.lock:
                receiver.received.append(
                    Received({k.lower(): v for k, v in self.headers.items()}, body, status)
                )
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        if receiver.hold is not None:
            receiver.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
