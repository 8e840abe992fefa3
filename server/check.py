"""``punchcard check``: the ledger's invariants (``db/integrity.py``) against one database,
printed for a person (one line per drift, then a summary) or as one JSON object.

It connects as ``punchcard_worker`` (``PUNCHCARD_WORKER_DATABASE_URL``, or DATABASE_URL
with that role), the role whose policies show every trainer's rows. Exit codes: 0 clean,
1 drift found; a database that cannot be reached or is not migrated is refused before
(``server/startup.preflight``: 3 and 4), an error during the check is 3.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Collection

import asyncpg

from punchcard.db import integrity, roles
from punchcard.server.startup import CONNECT_TIMEOUT, EXIT_DATABASE, Refused
from punchcard.settings import Settings, hide_password

EXIT_CLEAN = 0
EXIT_DRIFT = 1


async def _drifts(url: str, skip: Collection[str]) -> list[integrity.Drift]:
    conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    try:
        return await integrity.check(conn, skip=skip)
    finally:
        await conn.close()


def summary(drifts: list[integrity.Drift], *, checked: int, seconds: float) -> str:
    """``ledger check: clean (11 invariants, 0.12s)`` or the drifts per invariant."""
    if not drifts:
        return f"ledger check: clean ({checked} invariants, {seconds:.2f}s)"
    found = {name: n for name, n in integrity.counts(drifts).items() if n}
    per = ", ".join(f"{name} {n}" for name, n in found.items())
    return (
        f"ledger check: {len(drifts)} drift{'s' if len(drifts) != 1 else ''} "
        f"({per}; {checked} invariants, {seconds:.2f}s)"
    )


def run_check(settings: Settings, *, as_json: bool, skip: Collection[str]) -> int:
    """Check, print, and return the exit code."""
    url = roles.worker_url(settings)
    started = time.monotonic()
    try:
        drifts = asyncio.run(_drifts(url, skip))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        why = str(error) or type(error).__name__
        raise Refused(EXIT_DATABASE, f"checking {hide_password(url)} failed: {why}") from None
    seconds = time.monotonic() - started
    checked = len(integrity.NAMES) - len(set(skip))
    if as_json:
        body = {
            "clean": not drifts,
            "drifts": [drift.as_dict() for drift in drifts],
            "counts": {k: n for k, n in integrity.counts(drifts).items() if k not in skip},
            "skipped": sorted(set(skip)),
            "seconds": round(seconds, 3),
        }
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        for drift in drifts:
            print(drift.line())
        print(summary(drifts, checked=checked, seconds=seconds))
    return EXIT_DRIFT if drifts else EXIT_CLEAN
