"""Prometheus metrics: one registry per process, rendered on ``GET /metrics``.

Counted where the work happens, at a cost of a dictionary lookup and a locked add:
GraphQL operations in ``gql/engine.py`` (per operation name and error code), HTTP
requests in ``server/observe.py`` (per route), live fan-outs in ``live/hub.py``. What a
process *has* (open sockets, subscriptions, pool connections, how late the sweeper is)
is read when Prometheus scrapes, by collectors the app registers (``server/app.py``), so
it costs nothing between scrapes.

Label values are bounded. An operation's label is its ``operationName`` (a GraphQL name,
so never more than a word) for the first ``MAX_OPERATIONS`` distinct names a process
sees, ``other`` after that, ``anonymous`` without a name and ``invalid`` for a document
that does not parse, validate or name one operation. Error codes are punchcard's own
upper-case codes; anything else is ``OTHER``.

The sweeper is a separate process: it serves its own registry on
``PUNCHCARD_SWEEPER_METRICS_PORT`` (batch sizes, reminder sends and failures, and its
periodic ledger check: drift per invariant, when it last ran). How late
it runs is read from the database by the API's ``/metrics`` instead, so the number
keeps growing when no sweeper runs at all.
"""

from __future__ import annotations

import re
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import disable_created_metrics as _no_created_series
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# No `*_created` series: half the text, and nothing Prometheus needs.
_no_created_series()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST
MAX_OPERATIONS = 100
MAX_CODES = 40
ANONYMOUS = "anonymous"
OTHER = "other"
INVALID = "invalid"
_CODE = re.compile(r"[A-Z][A-Z_]{0,47}")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

graphql_requests = Counter(
    "punchcard_graphql_requests",
    "GraphQL operations run (HTTP and WebSocket), by operationName",
    ["operation", "type"],
    registry=REGISTRY,
)
graphql_errors = Counter(
    "punchcard_graphql_errors",
    "GraphQL errors answered, by operationName and extensions.code",
    ["operation", "code"],
    registry=REGISTRY,
)
graphql_duration = Histogram(
    "punchcard_graphql_duration_seconds",
    "Time to run a GraphQL query or mutation (from a valid document to its result)",
    ["operation"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
planner_queries = Counter(
    "punchcard_planner_queries",
    "Queries by how they ran: planned, fallback (met something unexpected, answered by "
    "graphql-core), unplanned (never planned: graphql-core)",
    ["outcome"],
    registry=REGISTRY,
)
http_requests = Counter(
    "punchcard_http_requests",
    "HTTP requests answered, by route and status",
    ["route", "status"],
    registry=REGISTRY,
)
http_duration = Histogram(
    "punchcard_http_request_duration_seconds",
    "Time from a request's start to the end of its response, by route",
    ["route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
fanout_seconds = Histogram(
    "punchcard_live_fanout_seconds",
    "From a NOTIFY waking the live hub to every subscriber's frame handed to its socket",
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)

# The sweeper's own (served on PUNCHCARD_SWEEPER_METRICS_PORT by `punchcard sweep`).
sweeper_batch = Histogram(
    "punchcard_sweeper_batch_size",
    "Rows a sweeper batch handled, by kind (completions, reminders, purges, expiries, thaws)",
    ["kind"],
    buckets=(0, 1, 5, 10, 50, 100, 250, 500, 1000, 5000),
    registry=REGISTRY,
)
sweeper_completed = Counter(
    "punchcard_sweeper_bookings_completed",
    "Bookings the sweeper completed, by outcome (charged, unpaid, unpackaged)",
    ["outcome"],
    registry=REGISTRY,
)
reminders_sent = Counter(
    "punchcard_sweeper_reminders_sent", "Reminders delivered", registry=REGISTRY
)
reminder_failures = Counter(
    "punchcard_sweeper_reminder_failures",
    "Reminder sends that failed (each is retried with backoff)",
    registry=REGISTRY,
)
webhook_attempts = Counter(
    "punchcard_sweeper_webhook_attempts",
    "Webhook delivery attempts, by outcome (failed ones are retried on the schedule)",
    ["outcome"],
    registry=REGISTRY,
)
sweeper_errors = Counter(
    "punchcard_sweeper_errors",
    "Sweeper passes cut short by a lost connection or an error (retried)",
    registry=REGISTRY,
)
sweeper_last_pass = Gauge(
    "punchcard_sweeper_last_pass_timestamp_seconds",
    "When this sweeper last finished a pass (Unix time)",
    registry=REGISTRY,
)

# The sweeper's periodic ledger check (PUNCHCARD_CHECK_INTERVAL_SECONDS, db/integrity.py).
ledger_drift = Gauge(
    "punchcard_ledger_drift",
    "Rows the last ledger check found breaking each invariant (0: it holds)",
    ["invariant"],
    registry=REGISTRY,
)
ledger_check_last_success = Gauge(
    "punchcard_ledger_check_last_success_timestamp_seconds",
    "When this sweeper last finished a ledger check (Unix time), drift found or not",
    registry=REGISTRY,
)
ledger_check_duration = Gauge(
    "punchcard_ledger_check_duration_seconds",
    "How long this sweeper's last ledger check took",
    registry=REGISTRY,
)

_lock = threading.Lock()
_operations: dict[str | None, str] = {None: ANONYMOUS}
_codes: dict[str, str] = {}


def operation_label(name: str | None) -> str:
    """The label of operation ``name``: itself for the first MAX_OPERATIONS names."""
    label = _operations.get(name)
    if label is not None:
        return label
    with _lock:
        if len(_operations) <= MAX_OPERATIONS:
            label = _operations.setdefault(name, name or ANONYMOUS)
        else:
            label = OTHER
    return label


def code_label(code: object) -> str:
    """An error code as a label: punchcard's upper-case codes, else OTHER."""
    if not isinstance(code, str):
        return OTHER
    label = _codes.get(code)
    if label is not None:
        return label
    with _lock:
        ok = len(_codes) < MAX_CODES and _CODE.fullmatch(code) is not None
        label = _codes.setdefault(code, code) if ok else OTHER
    return label


def render() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)
