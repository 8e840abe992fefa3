"""Where useSession's latency tail comes from: collector pauses, measured.

Several punchcard servers (benchmarks/probe_server.py: the same app, plus a probe) run
side by side, each with other collector thresholds, beside the bare endpoint; they take
turns, round after round, under the same load (useSession over 1,000 packages, then the
calendar). For each: req/s and wrk's p50/p99, the p99 of the time requests spent in the
app, the same with the collector's pauses during each request taken out, and the
collections (count, longest pause, total) that ran. Ratios against the first server
(the old thresholds) and the bare endpoint's p99 come from the same run.

    python -m benchmarks.tail [--seconds 6] [--rounds 3] [--try 2000,10,100 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.harness import Load, bin_path, free_port, fresh_database, serving, wrk
from benchmarks.http_api import BASELINE_BODY, CALENDAR_BODY, USE_BODY, seed, vacuum
from punchcard.gql.auth import issue_token
from punchcard.server.app import GC_THRESHOLDS
from punchcard.settings import DEV_JWT_SECRET, Settings

OLD = (50_000, 50, 1_000)  # the thresholds before issue 13
SERVERS = {f"old gc {OLD}": ",".join(map(str, OLD))}
if GC_THRESHOLDS != OLD:
    SERVERS[f"now gc {GC_THRESHOLDS}"] = ""  # the server's own


@dataclass
class Sample:
    load: Load
    app_p99_ms: float = 0.0
    app_p99_no_gc_ms: float = 0.0
    pauses: list[tuple[int, float, int]] = field(default_factory=list)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000 if ordered else 0.0


def probed(base: str, load: Load) -> Sample:
    data: dict[str, Any] = httpx.get(f"{base}/probe", timeout=10).json()
    spans = data["requests"]
    return Sample(
        load,
        _p99([took for took, _ in spans]),
        _p99([took - paused for took, paused in spans]),
        [tuple(p) for p in data["gc"]],  # type: ignore[misc]
    )


def run(seconds: int, rounds: int) -> dict[str, dict[str, list[Sample]]]:
    with fresh_database() as url:
        packages, _ = asyncio.run(seed(url))
        token = issue_token(Settings(), "bench-trainer", ttl_seconds=3600)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "JWT_SECRET": DEV_JWT_SECRET,
            "PUNCHCARD_LOG_LEVEL": "warning",
            # 16 connections in flight: no pool waits, and several servers fit under
            # PostgreSQL's max_connections together.
            "PUNCHCARD_POOL_MAX": "16",
        }
        bare_port = free_port()
        bare_cmd = [
            bin_path("uvicorn"), "benchmarks.baseline_app:app", "--port", str(bare_port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning",
        ]  # fmt: skip
        results: dict[str, dict[str, list[Sample]]] = {}
        with serving(bare_cmd, env, bare_port) as bare, _servers(env) as servers:
            works = {
                "useSession": (USE_BODY, packages, f"{bare}/use", BASELINE_BODY),
                "calendar": (CALENDAR_BODY, [0], f"{bare}/calendar", CALENDAR_BODY),
            }
            for work, (body, ids, bare_url, bare_body) in works.items():
                per = results[work] = {name: [] for name in [*servers, "bare"]}
                for base in servers.values():  # warm
                    wrk(f"{base}/graphql", body_template=body, ids=ids, token=token, seconds=2)
                wrk(bare_url, body_template=bare_body, ids=ids, token=token, seconds=2)
                for _ in range(rounds):
                    for name, base in servers.items():
                        asyncio.run(vacuum(url))
                        httpx.get(f"{base}/probe", timeout=10)  # start over
                        load = wrk(
                            f"{base}/graphql", body_template=body, ids=ids, token=token,
                            seconds=seconds,
                        )  # fmt: skip
                        per[name].append(probed(base, load))
                    asyncio.run(vacuum(url))
                    load = wrk(
                        bare_url, body_template=bare_body, ids=ids, token=token, seconds=seconds
                    )
                    per["bare"].append(Sample(load))
        return results


class _servers:
    """The probe servers of SERVERS, running together: {name: base URL}."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.stack: list[Any] = []

    def __enter__(self) -> dict[str, str]:
        started = {}
        for name, thresholds in SERVERS.items():
            port = free_port()
            command = [sys.executable, "-m", "benchmarks.probe_server", "--port", str(port)]
            env = {**self.env, "PROBE_GC_THRESHOLD": thresholds}
            context = serving(command, env, port)
            started[name] = context.__enter__()
            self.stack.append(context)
        return started

    def __exit__(self, *exc: object) -> None:
        for context in reversed(self.stack):
            context.__exit__(None, None, None)


def table(results: dict[str, dict[str, list[Sample]]]) -> str:
    lines = []
    for work, per in results.items():
        first = next(iter(per.values()))
        bare = per["bare"]
        bare_p99 = statistics.median(s.load.p99_ms for s in bare)
        base_rps = statistics.median(s.load.rps for s in first)
        lines.append(
            f"\n{work}: {'req/s':>7} {'vs old':>6} {'p50':>6} {'p99':>6} {'p99/bare':>8} "
            f"{'app p99':>7} {'-gc':>6} {'GCs':>4} {'max ms':>6} {'GC ms':>6}  rounds (req/s)"
        )
        for name, samples in per.items():
            rps = statistics.median(s.load.rps for s in samples)
            p50 = statistics.median(s.load.p50_ms for s in samples)
            p99 = statistics.median(s.load.p99_ms for s in samples)
            app = statistics.median(s.app_p99_ms for s in samples)
            no_gc = statistics.median(s.app_p99_no_gc_ms for s in samples)
            pauses = [p for s in samples for p in s.pauses]
            count = len(pauses) / len(samples)
            longest = max((p[1] for p in pauses), default=0.0) * 1000
            total = sum(p[1] for p in pauses) / len(samples) * 1000
            rounds = ", ".join(f"{s.load.rps:.0f}" for s in samples)
            lines.append(
                f"  {name:26} {rps:7.0f} {rps / base_rps:6.2f} {p50:6.1f} {p99:6.1f} "
                f"{p99 / bare_p99:8.2f} {app:7.1f} {no_gc:6.1f} {count:4.0f} {longest:6.1f} "
                f"{total:6.0f}  {rounds}"
            )
    lines.append(
        "\n(p50/p99: wrk, ms; app p99: time in the app; -gc: the same minus the collector's "
        "pauses during each request; GCs, GC ms: per run; max ms: longest pause)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--try", dest="candidates", action="append", default=[], metavar="A,B,C",
        help="more collector thresholds to run beside the old and the current ones",
    )  # fmt: skip
    args = parser.parse_args()
    SERVERS.update({f"gc ({c})": c for c in args.candidates})
    started = time.monotonic()
    print(table(run(args.seconds, args.rounds)))
    print(f"(measured in {time.monotonic() - started:.0f} s)")
