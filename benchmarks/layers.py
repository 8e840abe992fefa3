"""What each layer punchcard keeps costs useSession: the server with every layer on,
then with one taken off at a time, in the same run.

The layers: ``Observe`` (request id, access log, HTTP metrics: server/observe.py), CORS
(server/cors.py; configured, and every request sends an ``Origin``, as a browser's
cross-origin call does), the HTTP protocol with the header deadline
(server/slow_clients.py) and row-level security (migration 0004; off = the API pool
connects as the owner, a superuser the policies do not apply to: the same statements,
no policies). The servers are benchmarks/probe_server.py without its probe, all running
at once; they take turns, round after round, so the machine's drift hits them alike.
useSession over 1,000 packages at 8 connections (each pool has 8, so six servers fit
under PostgreSQL's connection limit), the ledger checked after each load. The ratio is
each configuration's median req/s over the all-layers one's. Throughput moves with
whatever else the machine runs, so each load also counts the server process's CPU time
per request served (psutil): the layer's cost is the all-layers CPU time minus the
configuration's, which the neighbours' load moves far less.

The transactional outbox ("Integrations") is not in this codebase yet: nothing to take off.

    python -m benchmarks.layers [--seconds 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from dataclasses import dataclass

from benchmarks.harness import (
    Load,
    cpu_seconds,
    free_port,
    fresh_database,
    listening_process,
    serving,
    wrk,
)
from benchmarks.http_api import USE_BODY, checked, counters, seed, vacuum
from punchcard.gql.auth import issue_token
from punchcard.settings import DEV_JWT_SECRET, Settings

ORIGIN = "http://app.example"
ALL = "all layers"
# name: (probe_server --without layers, environment changes)
CONFIGS: dict[str, tuple[list[str], dict[str, str]]] = {
    ALL: ([], {}),
    "- Observe (request id, log, metrics)": (["observe"], {}),
    "- CORS": (["cors"], {}),
    "- header deadline protocol": (["slow_clients"], {}),
    "- row-level security": ([], {"rls": "off"}),
    "- all four": (["observe", "cors", "slow_clients"], {"rls": "off"}),
}


CONNECTIONS = 8  # wrk's; each server's pool has as many, so six servers fit in PostgreSQL


@dataclass(frozen=True)
class Sample:
    load: Load
    cpu_us: float  # the server process's CPU time per request served


def run(seconds: int, rounds: int) -> dict[str, list[Sample]]:
    results: dict[str, list[Sample]] = {name: [] for name in CONFIGS}
    with fresh_database() as url:
        packages, _ = asyncio.run(seed(url))
        token = issue_token(Settings(), "bench-trainer", ttl_seconds=3600)
        base_env = {
            **os.environ,
            "DATABASE_URL": url,
            "JWT_SECRET": DEV_JWT_SECRET,
            "PUNCHCARD_LOG_LEVEL": "warning",
            "PUNCHCARD_CORS_ORIGINS": ORIGIN,
            "PUNCHCARD_POOL_MAX": str(CONNECTIONS),
        }
        with contextlib.ExitStack() as stack:
            targets, processes = {}, {}
            for name, (without, changes) in CONFIGS.items():
                env = dict(base_env)
                if changes.get("rls") == "off":
                    env["PUNCHCARD_API_DATABASE_URL"] = url  # the owner: policies bypassed
                port = free_port()
                command = [
                    sys.executable, "-m", "benchmarks.probe_server", "--port", str(port),
                    "--without", "probe", *(f"--without={layer}" for layer in without),
                ]  # fmt: skip
                targets[name] = f"{stack.enter_context(serving(command, env, port))}/graphql"
                processes[name] = listening_process(port)
            for target in targets.values():  # warm
                wrk(target, body_template=USE_BODY, ids=packages, token=token, seconds=2,
                    connections=CONNECTIONS, origin=ORIGIN)  # fmt: skip
            for _ in range(rounds):
                for name, target in targets.items():
                    time.sleep(0.5)
                    asyncio.run(vacuum(url))
                    before = asyncio.run(counters(url))
                    cpu = cpu_seconds(processes[name])
                    load = wrk(target, body_template=USE_BODY, ids=packages, token=token,
                               seconds=seconds, connections=CONNECTIONS,
                               origin=ORIGIN)  # fmt: skip
                    cpu = cpu_seconds(processes[name]) - cpu
                    checked(url, load, before, CONNECTIONS)
                    served = asyncio.run(counters(url))[0] - before[0]
                    results[name].append(Sample(load, cpu / served * 1e6))
    return results


def table(results: dict[str, list[Sample]]) -> str:
    full = statistics.median(s.load.rps for s in results[ALL])
    full_cpu = statistics.median(s.cpu_us for s in results[ALL])
    lines = [
        f"{'useSession, 1,000 packages':38} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'vs all':>7} {'CPU us':>7} {'layer':>6}  rounds (CPU us/request)"
    ]
    for name, samples in results.items():
        rps = statistics.median(s.load.rps for s in samples)
        p50 = statistics.median(s.load.p50_ms for s in samples)
        p99 = statistics.median(s.load.p99_ms for s in samples)
        cpu = statistics.median(s.cpu_us for s in samples)
        rounds = ", ".join(f"{s.cpu_us:.0f}" for s in samples)
        lines.append(
            f"{name:38} {rps:7.0f} {p50:7.2f} {p99:7.2f} {rps / full:7.2f} {cpu:7.0f} "
            f"{full_cpu - cpu:6.0f}  {rounds}"
        )
    lines.append(
        "(CPU us: the server process's CPU time per request served, median of the rounds; "
        "layer: what the layer(s) taken off cost a request, all layers' CPU us minus this)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    started = time.monotonic()
    print(table(run(args.seconds, args.rounds)))
    print(f"(measured in {time.monotonic() - started:.0f} s)")
