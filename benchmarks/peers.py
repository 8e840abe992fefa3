"""punchcard beside its peers, in the same run: the bare Python endpoints
(benchmarks/baseline_app.py) and PostGraphile v5 (benchmarks/postgraphile_peer.py).

Two pieces of work, each by all three servers, over the same seeded rows
(benchmarks.http_api.seed; PostGraphile's on a template copy of them):

- useSession, 16 connections spread over 1,000 packages (the guarded UPDATE, ledger
  INSERT and NOTIFY; the JWT verified by each server);
- the calendar: a month of 300 bookings, each with its client and package.

All three servers run for the whole benchmark; the targets take turns, round after
round, so the machine's drift (other processes, autovacuum) hits them alike. Each line
gives the median of the rounds (req/s, p50, p99 from wrk), the ratios of the medians
(vs the bare endpoint, vs PostGraphile), the medians of the ratios within each round
("paired": vs bare / vs PostGraphile), then every round's req/s. After each useSession
load the ledger is checked (benchmarks.http_api.checked).

    python -m benchmarks.peers [--seconds 10] [--rounds 3] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks import postgraphile_peer as peer
from benchmarks.harness import Load, bin_path, free_port, fresh_database, serving, wrk
from benchmarks.http_api import (
    BASELINE_BODY,
    CALENDAR_BODY,
    USE_BODY,
    checked,
    counters,
    seed,
    vacuum,
)
from punchcard.gql.auth import issue_token
from punchcard.settings import DEV_JWT_SECRET, Settings

POOL = Settings().pool_max_size  # every server gets punchcard's pool size
BARE, PUNCHCARD, POSTGRAPHILE = "bare Python", "punchcard", "PostGraphile v5"


@dataclass
class Target:
    name: str
    url: str  # the endpoint
    body: str
    token: str
    database: str  # where its ledger is (useSession's check)


@dataclass
class Result:
    work: str
    target: str
    loads: list[Load] = field(default_factory=list)

    def median(self, pick: Callable[[Load], float]) -> float:
        return statistics.median(pick(load) for load in self.loads)


def run(seconds: int, rounds: int, connections: int) -> list[Result]:
    results: list[Result] = []
    with fresh_database() as url:
        packages, _ = asyncio.run(seed(url))
        peer_owner = asyncio.run(peer.clone(url))  # before anything connects to url
        peer_url = peer.api_url(peer_owner)
        env = {**os.environ, "DATABASE_URL": url, "JWT_SECRET": DEV_JWT_SECRET}
        token = issue_token(Settings(), "bench-trainer", ttl_seconds=3600)
        peer_token = peer.token(DEV_JWT_SECRET, "bench-trainer", trainer_id=1)
        bare_port, api_port, peer_port = free_port(), free_port(), free_port()
        bare_cmd = [
            bin_path("uvicorn"), "benchmarks.baseline_app:app", "--port", str(bare_port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning",
        ]  # fmt: skip
        api_cmd = [
            bin_path("punchcard"), "serve", "--port", str(api_port), "--log-level", "warning",
        ]  # fmt: skip
        peer_env = {**os.environ, **peer.environment(peer_url, DEV_JWT_SECRET, peer_port, POOL)}
        with (
            serving(bare_cmd, env, bare_port) as bare,
            serving(api_cmd, env, api_port) as api,
            serving(peer.command(peer_port), peer_env, peer_port) as graphile,
        ):
            work = {
                "useSession, 1,000 packages": [
                    Target(BARE, f"{bare}/use", BASELINE_BODY, token, url),
                    Target(PUNCHCARD, f"{api}/graphql", USE_BODY, token, url),
                    Target(POSTGRAPHILE, f"{graphile}/graphql", peer.USE_BODY, peer_token,
                           peer_owner),
                ],
                "calendar, 300 bookings": [
                    Target(BARE, f"{bare}/calendar", CALENDAR_BODY, token, url),
                    Target(PUNCHCARD, f"{api}/graphql", CALENDAR_BODY, token, url),
                    Target(POSTGRAPHILE, f"{graphile}/graphql", peer.CALENDAR_BODY, peer_token,
                           peer_owner),
                ],
            }  # fmt: skip
            for name, targets in work.items():
                by_target = {t.name: Result(name, t.name) for t in targets}
                results.extend(by_target.values())
                ids = packages if name.startswith("useSession") else [0]
                for target in targets:  # warm: JIT, prepared statements, caches
                    wrk(target.url, body_template=target.body, ids=ids, token=target.token,
                        seconds=2, connections=connections)  # fmt: skip
                for _ in range(rounds):
                    for target in targets:
                        by_target[target.name].loads.append(
                            measure(target, ids, seconds, connections, counted=ids is packages)
                        )
    return results


def measure(target: Target, ids: list[int], seconds: int, connections: int, counted: bool) -> Load:
    if not counted:
        return wrk(target.url, body_template=target.body, ids=ids, token=target.token,
                   seconds=seconds, connections=connections)  # fmt: skip
    time.sleep(0.5)  # the previous load's requests in flight finish before counting
    asyncio.run(vacuum(target.database))  # no run pays for its predecessor's dead rows
    before = asyncio.run(counters(target.database))
    load = wrk(target.url, body_template=target.body, ids=ids, token=target.token,
               seconds=seconds, connections=connections)  # fmt: skip
    checked(target.database, load, before, connections)
    return load


def paired_ratio(result: Result, peer: Result) -> float:
    """The median of each round's ratio to the peer's load next to it: the machine's
    drift between rounds (this one shares its host) cancels within a round."""
    return statistics.median(
        ours.rps / theirs.rps for ours, theirs in zip(result.loads, peer.loads, strict=True)
    )


def table(results: list[Result]) -> str:
    lines = [
        f"{'work':28} {'server':16} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p99/p50':>7} {'vs bare':>7} {'vs PG5':>7} {'paired':>13}  rounds (req/s)"
    ]
    by = {(r.work, r.target): r for r in results}
    for r in results:
        rps = r.median(lambda load: load.rps)
        p50, p99 = r.median(lambda load: load.p50_ms), r.median(lambda load: load.p99_ms)
        bare = by[(r.work, BARE)].median(lambda load: load.rps)
        graphile = by[(r.work, POSTGRAPHILE)].median(lambda load: load.rps)
        rounds = ", ".join(f"{load.rps:.0f}" for load in r.loads)
        to_bare = paired_ratio(r, by[(r.work, BARE)])
        paired = f"{to_bare:.2f}/{paired_ratio(r, by[(r.work, POSTGRAPHILE)]):.2f}"
        lines.append(
            f"{r.work:28} {r.target:16} {rps:7.0f} {p50:7.2f} {p99:7.2f} {p99 / p50:7.2f} "
            f"{rps / bare:7.2f} {rps / graphile:7.2f} {paired:>13}  {rounds}"
        )
    api_use = by[("useSession, 1,000 packages", PUNCHCARD)]
    bare_use = by[("useSession, 1,000 packages", BARE)]
    ratio = api_use.median(lambda load: load.p99_ms) / bare_use.median(lambda load: load.p99_ms)
    lines.append(f"useSession p99, punchcard / bare: {ratio:.2f} (target <= 2)")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    started = time.monotonic()
    print(table(run(args.seconds, args.rounds, args.connections)))
    print(f"(measured in {time.monotonic() - started:.0f} s)")
