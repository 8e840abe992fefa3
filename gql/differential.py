"""The differential check: graphql-core is the planner's reference.

With ``planner_differential`` on (the test suite turns it on for every app it starts, in
process and as subprocesses), every query the planner answers is also run on graphql-core,
and the two responses must be the same text: data with its key order, and errors with
their messages, paths, locations and extensions. A difference raises ``PlannerMismatch``
in the request (the test that sent it fails) and is appended, one JSON line each, to
``planner_mismatches`` when set, so a server running as a subprocess fails the suite too.

Both runs read one REPEATABLE READ snapshot on one connection (``Engine._differential``):
tests that write while others read (the storms) cannot make the two runs see different
rows, so any difference is the planner's, never a concurrent writer's.

A planned mutation (one root field answered from its own row) runs once, on the plan;
graphql-core's answer completes the same root outcome (``planned.replay``), so what is
compared is everything after the change, and the change is never made twice."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from graphql import ExecutionResult

from punchcard.gql import json_bytes

log = logging.getLogger("punchcard.planner")


class PlannerMismatch(AssertionError):
    """The planner answered a query otherwise than graphql-core."""


def canonical(result: ExecutionResult) -> str:
    """A response as the text that decides whether two are the same: the bytes HTTP
    sends (``json_bytes``, key order kept; a planned answer's datetimes are written
    there), or, for what no response could carry, its ``repr``."""
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [error.formatted for error in result.errors]
    try:
        return json_bytes.dumps(body).decode()
    except (TypeError, ValueError):
        return json.dumps(body, ensure_ascii=False, default=repr)


def check(
    planned: ExecutionResult,
    reference: ExecutionResult,
    *,
    query: str,
    operation_name: str | None,
    variables: dict[str, Any] | None,
    record: Path | None,
) -> None:
    """Raise ``PlannerMismatch`` (after recording it) unless the responses are the same."""
    ours, theirs = canonical(planned), canonical(reference)
    if ours == theirs:
        return
    entry = {
        "query": query,
        "operationName": operation_name,
        "variables": variables,
        "planned": ours,
        "graphql_core": theirs,
    }
    line = json.dumps(entry, ensure_ascii=False, default=repr)
    log.error("planner mismatch: %s", line)
    if record is not None:
        with record.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
    raise PlannerMismatch(f"the planner answered otherwise than graphql-core: {line}")
