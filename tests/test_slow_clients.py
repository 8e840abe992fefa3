"""Slow clients and the connection cap, over raw sockets against real servers (hardening,
defect 8): headers that dribble in are cut off after ``PUNCHCARD_HEADER_TIMEOUT_SECONDS``,
prompt clients (keep-alive and WebSocket included) are not, and over
``PUNCHCARD_MAX_CONNECTIONS`` a request gets a JSON 503 until a slot comes back.

Timing: the header timeout is 1 s here; a test only asserts that the server closed within
ten times that, so a slow machine does not fail it, and a server that never closes does.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import uvicorn
from websockets.exceptions import InvalidStatus

from punchcard.server.slow_clients import http_protocol
from punchcard.settings import Settings
from tests.conftest import TEMPLATE, database_url
from tests.live import TIMEOUT, serve_env, socket, token
from tests.processes import free_port, server

HEADER_TIMEOUT = 1.0
CLOSED_WITHIN = 10 * HEADER_TIMEOUT
CAP = 2
ME = json.dumps({"query": "{ me { id } }"}).encode()


def post(host: str, body: bytes = ME, *, bearer: str | None = None) -> tuple[bytes, bytes]:
    """A complete ``POST /graphql``: (request line and headers, body)."""
    auth = f"Authorization: Bearer {bearer}\r\n" if bearer else ""
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: {host}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode(), body


def get(host: str, path: str = "/healthz") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Padding: {'x' * 40}\r\n\r\n".encode()


@asynccontextmanager
async def raw(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a content-length: (status, headers, body)."""
    async with asyncio.timeout(TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in filter(None, lines):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def closed_by_server(reader: asyncio.StreamReader) -> tuple[float, bytes]:
    """Wait (at most CLOSED_WITHIN) until the server closes: (seconds waited, bytes read).
    A reset counts as closed (the server may close while a dribbled byte is in flight)."""
    started = time.monotonic()
    data = b""
    async with asyncio.timeout(CLOSED_WITHIN):
        try:
            while chunk := await reader.read(4096):
                data += chunk
        except ConnectionResetError:
            pass
    return time.monotonic() - started, data


async def dribble(writer: asyncio.StreamWriter, data: bytes, interval: float = 0.25) -> None:
    """One byte per ``interval`` (``len(data) * interval`` is far past CLOSED_WITHIN)."""
    assert len(data) * interval > 2 * CLOSED_WITHIN
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(interval)
    except ConnectionError:
        pass  # the server closed: what the test waits for


def refused(body: bytes, code: str) -> dict[str, Any]:
    [error] = json.loads(body)["errors"]
    assert error["extensions"]["code"] == code, error
    return dict(error)


def _admin(pg_server: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(pg_server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def module_db(pg_server: str, template_url: str) -> Iterator[str]:
    name = f"slow_{os.getpid()}"
    _admin(pg_server, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    try:
        yield database_url(pg_server, name)
    finally:
        _admin(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def url(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``punchcard serve`` (httptools) with a 1 s header timeout."""
    env = serve_env(module_db, PUNCHCARD_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT))
    with server(env, tmp_path_factory.mktemp("slow") / "serve.log") as base:
        yield base


@pytest.fixture(scope="module")
def capped(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``punchcard serve`` serving at most CAP connections, with a 1 s header timeout."""
    env = serve_env(
        module_db,
        PUNCHCARD_MAX_CONNECTIONS=str(CAP),
        PUNCHCARD_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
    )
    with server(env, tmp_path_factory.mktemp("capped") / "serve.log") as base:
        yield base


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers 200 with its length (for the h11 server)."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps({"size": size}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(params=["httptools", "h11"])
async def any_parser(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A uvicorn server in this process with the protocol of ``punchcard serve`` over each
    parser uvicorn has, serving ``echo_app`` (no database: only the protocol is tested)."""
    settings = Settings(header_timeout_seconds=HEADER_TIMEOUT)
    port = free_port()
    config = uvicorn.Config(
        echo_app,
        host="127.0.0.1",
        port=port,
        http=http_protocol(settings, request.param),
        ws="none",
        lifespan="off",
        log_config=None,
        log_level="warning",
    )
    served = uvicorn.Server(config)
    task = asyncio.create_task(served.serve())
    async with asyncio.timeout(TIMEOUT):
        while not served.started:
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        served.should_exit = True
        await task


# -- the header deadline --------------------------------------------------------------


async def test_headers_dribbled_in_are_cut_off_while_others_are_served(url: str) -> None:
    host = urlsplit(url).netloc
    async with raw(url) as (reader, writer):
        slow = asyncio.create_task(dribble(writer, get(host)))
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
            assert (await http.get("/healthz")).status_code == 200  # while it dribbles
        waited, data = await closed_by_server(reader)
        await slow
    assert waited < CLOSED_WITHIN
    assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data


async def test_partial_headers_then_silence_get_a_408_with_a_json_error(
    any_parser: str,
) -> None:
    host = urlsplit(any_parser).netloc
    async with raw(any_parser) as (reader, writer):
        writer.write(post(host)[0][:30])  # half a request line and header block
        status, headers, body = await response(reader)
        assert status == 408
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close"
        refused(body, "REQUEST_TIMEOUT")
        await closed_by_server(reader)


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    any_parser: str,
) -> None:
    async with raw(any_parser) as (reader, _):
        waited, data = await closed_by_server(reader)
    assert data == b""
    assert waited < CLOSED_WITHIN


async def test_prompt_headers_are_not_timed_out_and_keep_alive_carries_on(
    any_parser: str,
) -> None:
    """Headers at once, then a body slower than the header timeout (the body has its own,
    longer deadline), then a second request on the same connection."""
    host = urlsplit(any_parser).netloc
    async with raw(any_parser) as (reader, writer):
        head, body = post(host)
        writer.write(head)
        await asyncio.sleep(2 * HEADER_TIMEOUT)
        writer.write(body)
        status, _, answer = await response(reader)
        assert (status, json.loads(answer)) == (200, {"size": len(body)})
        writer.write(b"".join(post(host)))  # kept alive: the next request, promptly
        status, _, answer = await response(reader)
        assert (status, json.loads(answer)) == (200, {"size": len(body)})


async def test_the_second_request_on_a_kept_alive_connection_has_a_deadline_too(
    any_parser: str,
) -> None:
    host = urlsplit(any_parser).netloc
    async with raw(any_parser) as (reader, writer):
        writer.write(b"".join(post(host)))
        status, _, _ = await response(reader)
        assert status == 200
        slow = asyncio.create_task(dribble(writer, b"".join(post(host))))
        waited, data = await closed_by_server(reader)
        await slow
    assert waited < CLOSED_WITHIN
    assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data


async def test_pipelined_requests_are_answered(any_parser: str) -> None:
    host = urlsplit(any_parser).netloc
    async with raw(any_parser) as (reader, writer):
        writer.write(b"".join(post(host)) * 3)
        for _ in range(3):
            status, _, _ = await response(reader)
            assert status == 200


async def test_the_real_server_serves_keep_alive_and_websockets_past_the_header_timeout(
    url: str,
) -> None:
    host = urlsplit(url).netloc
    bearer = token("prompt-trainer")
    async with raw(url) as (reader, writer):
        for _ in range(2):
            writer.write(b"".join(post(host, bearer=bearer)))
            status, _, body = await response(reader)
            assert status == 200, body
            assert json.loads(body)["data"]["me"]["id"].startswith("trn_")
    async with socket(url, bearer) as ws:
        await asyncio.sleep(2 * HEADER_TIMEOUT)  # a WebSocket has no header deadline
        await ws.subscribe("1", "{ me { id } }")
        assert (await ws.data("1"))["me"]["id"].startswith("trn_")


# -- the connection cap ---------------------------------------------------------------


async def healthz(url: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        return await http.get("/healthz")


async def served_again(url: str) -> None:
    """Poll until a request is served (a released slot frees up asynchronously)."""
    async with asyncio.timeout(TIMEOUT):
        while (await healthz(url)).status_code != 200:
            await asyncio.sleep(0.05)


async def test_over_the_cap_a_request_gets_a_json_503_until_a_connection_is_released(
    capped: str,
) -> None:
    await served_again(capped)
    async with socket(capped, token("cap-1")) as first, socket(capped, token("cap-2")):
        answer = await healthz(capped)
        assert answer.status_code == 503
        assert answer.headers["content-type"] == "application/json"
        assert refused(answer.content, "SERVICE_UNAVAILABLE")["extensions"]["retryable"]
        async with httpx.AsyncClient(base_url=capped, timeout=TIMEOUT) as http:
            graphql = await http.post(
                "/graphql", content=ME, headers={"Content-Type": "application/json"}
            )
        assert graphql.status_code == 503
        with pytest.raises(InvalidStatus) as over:  # uvicorn alone would upgrade this one
            async with socket(capped, token("cap-3")):
                pass
        assert over.value.response.status_code == 503
        refused(over.value.response.body, "SERVICE_UNAVAILABLE")
        await first.subscribe("1", "{ me { id } }")  # those held are still served
        assert (await first.data("1"))["me"]["id"].startswith("trn_")
    await served_again(capped)


async def test_exactly_the_cap_is_served(capped: str) -> None:
    await served_again(capped)
    async with socket(capped, token("cap-1")):  # one held, plus this request: the cap
        assert (await healthz(capped)).status_code == 200


async def test_silent_connections_hold_slots_only_until_the_header_timeout(capped: str) -> None:
    await served_again(capped)
    async with raw(capped) as (first, _), raw(capped) as (second, _):
        answer = await healthz(capped)
        assert answer.status_code == 503  # both slots are held by connections saying nothing
        for reader in (first, second):
            await closed_by_server(reader)
    await served_again(capped)
