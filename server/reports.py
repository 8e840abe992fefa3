"""``GET /reports/packages.csv?asOf=...``: the package report (``packageReport``) as CSV.

Authenticated like ``/graphql`` (a Bearer JWT or API key; read-only keys may read it).
One row per package, by client name then sale, then a ``TOTAL`` row. Text a spreadsheet
would run as a formula (a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return) is prefixed with ``'``. Answers: 200 ``text/csv``; 400 ``BAD_USER_INPUT``
for an ``asOf`` that is not an ISO-8601 time with an offset; 401 ``UNAUTHENTICATED``; 503
``SERVICE_UNAVAILABLE`` when PostgreSQL does not answer in time.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from punchcard.db import checks, reports
from punchcard.db.errors import Code, DomainError, bad_input, unavailable
from punchcard.db.pool import UNAVAILABLE
from punchcard.db.types import Row
from punchcard.gql.auth import Principal
from punchcard.gql.context import Services, authenticate
from punchcard.gql.errors import refusal_body
from punchcard.gql.ids import Kind, encode

PATH = "/reports/packages.csv"
HEADER = (
    "purchase_id",
    "client_id",
    "client",
    "offer",
    "sold_at",
    "status",
    "expires_at",
    "sessions_total",
    "sessions_used",
    "sessions_held",
    "sessions_remaining",
    "sessions_available",
    "expiring_within_30_days",
    "unit_price_cents",
    "unused_value_cents",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
STATUS = {Code.UNAUTHENTICATED: 401, Code.BAD_USER_INPUT: 400, Code.SERVICE_UNAVAILABLE: 503}


def safe_text(value: str | None) -> str:
    """Text for a cell that no spreadsheet runs as a formula (OWASP's CSV injection)."""
    if value is None:
        return ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _moment(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value is not None else ""


def _number(value: int | None) -> str:
    return "" if value is None else str(value)


def as_of(query: str | None) -> datetime | None:
    """``asOf`` from the query string (absent: None, now). A ``+`` that was not URL-encoded
    arrives as a space: ``...T10:00:00 02:00`` is read as ``+02:00``."""
    if query is None:
        return None
    text = query.strip()
    candidates = [text]
    if " " in text:
        head, _, tail = text.rpartition(" ")
        candidates.append(f"{head}+{tail}")
    for candidate in candidates:
        try:
            parsed = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        return checks.moment("asOf", parsed)  # refuses a time without an offset
    raise bad_input("asOf must be an ISO-8601 time with an offset, e.g. 2026-12-31T23:59:59Z")


def render(rows: Sequence[Row]) -> str:
    """The CSV text: the header, one line per package, the TOTAL line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow(
            [
                encode(Kind.PURCHASE, row["id"]),
                encode(Kind.CLIENT, row["client_id"]),
                safe_text(row["client_name"]),
                safe_text(row["offer_name"]),
                _moment(row["created_at"]),
                row["status"],
                _moment(row["expires_at"]),
                *(_number(row[column]) for column in HEADER[7:]),
            ]
        )
    totals = reports.Totals.of(rows)
    writer.writerow(
        [
            "TOTAL",
            "",
            f"{totals.packages} packages",
            "",
            "",
            "",
            "",
            *(_number(getattr(totals, column)) for column in reports.TOTALLED),
            "",
            _number(totals.unused_value_cents),
        ]
    )
    return out.getvalue()


def _refusal(error: DomainError) -> JSONResponse:
    status = STATUS.get(error.code, 400)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = refusal_body(
        error.message,
        error.code.value,
        **{k: v for k, v in error.extensions.items() if k != "code"},
    )
    return JSONResponse(body, status_code=status, headers=headers)


async def packages_csv(request: Request) -> Response:
    services: Services = request.app.state.services
    caller = await authenticate(services, request.headers.get("authorization"))
    try:
        if caller is None:
            raise DomainError(Code.UNAUTHENTICATED, "send 'Authorization: Bearer <token>'")
        if not isinstance(caller, Principal):
            raise caller
        wanted = as_of(request.query_params.get("asOf"))
        try:
            moment, rows = await reports.package_report(
                services.pool.scoped(caller.trainer_id), trainer_id=caller.trainer_id, as_of=wanted
            )
        except UNAVAILABLE as error:
            raise unavailable(error) from error
    except DomainError as error:
        return _refusal(error)
    filename = f"packages-{moment.date().isoformat()}.csv"
    return Response(
        render(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
