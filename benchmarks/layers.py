"""What each layer punchcard keeps costs useSession: the server with every layer on,
then with one taken off at a time, in the same run.

The layers: ``Observe`` (request id, access log, HTTP metrics: server/observe.py), CORS
(server/cors.py; configured, and every request sends an ``Origin``, as a browser's
cross-origin call does), the HTTP protocol with the header deadline
(server/slow_clients.py) and row-level security (migration 0004; off = the API pool
connects as the owner, a superuser the policies do not apply to: the same statements,
no policies). The servers are benchmarks/probe_server.py without its probe; each
configuration is started in turn, round after round, so the machine's drift hits them
alike. useSession over 1,000 packages at 16 connections, the ledger checked after each
load; the ratio is each configuration's median req/s over the all-layers one's, and
``us/req`` what the layer costs a request (the difference of 1/throughput).

The transactional outbox ("Integrations") is not in this codebase yet: nothing to take off.

    python -m benchmarks.layers [--seconds 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

from benchmarks.harness import Load, free_port, fresh_database, serving, wrk
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


def run(seconds: int, rounds: int) -> dict[str, list[Load]]:
    results: dict[str, list[Load]] = {name: [] for name in CONFIGS}
    with fresh_database() as url:
        packages, _ = asyncio.run(seed(url))
        token = issue_token(Settings(), "bench-trainer", ttl_seconds=3600)
        base_env = {
            **os.environ,
            "DATABASE_URL": url,
            "JWT_SECRET": DEV_JWT_SECRET,
            "PUNCHCARD_LOG_LEVEL": "warning",
            "PUNCHCARD_CORS_ORIGINS": ORIGIN,
        }
        for _ in range(rounds):
            for name, (without, changes) in CONFIGS.items():
                env = dict(base_env)
                if changes.get("rls") == "off":
                    env["PUNCHCARD_API_DATABASE_URL"] = url  # the owner: policies bypassed
                port = free_port()
                command = [
                    sys.executable, "-m", "benchmarks.probe_server", "--port", str(port),
                    "--without", "probe", *(f"--without={layer}" for layer in without),
                ]  # fmt: skip
                with serving(command, env, port) as base:
                    target = f"{base}/graphql"
                    wrk(target, body_template=USE_BODY, ids=packages, token=token, seconds=2,
                        origin=ORIGIN)  # fmt: skip
                    time.sleep(0.5)
                    asyncio.run(vacuum(url))
                    before = asyncio.run(counters(url))
                    load = wrk(target, body_template=USE_BODY, ids=packages, token=token,
                               seconds=seconds, origin=ORIGIN)  # fmt: skip
                    checked(url, load, before)
                    results[name].append(load)
    return results


def table(results: dict[str, list[Load]]) -> str:
    full = statistics.median(load.rps for load in results[ALL])
    lines = [
        f"{'useSession, 1,000 packages':38} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'vs all':>7} {'us/req':>7}  rounds (req/s)"
    ]
    for name, loads in results.items():
        rps = statistics.median(load.rps for load in loads)
        p50 = statistics.median(load.p50_ms for load in loads)
        p99 = statistics.median(load.p99_ms for load in loads)
        saved = (1 / full - 1 / rps) * 1e6  # what the layer(s) cost one request
        rounds = ", ".join(f"{load.rps:.0f}" for load in loads)
        lines.append(
            f"{name:38} {rps:7.0f} {p50:7.2f} {p99:7.2f} {rps / full:7.2f} {saved:7.0f}  {rounds}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = time.monotonic()
    print(table(run(args.seconds, args.rounds)))
    print(f"(measured in {time.monotonic() - started:.0f} s)")
