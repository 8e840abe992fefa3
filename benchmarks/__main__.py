"""Every benchmark, one after another: ``python -m benchmarks`` (from the repository root,
with the project's virtualenv). Each prints its figures beside a baseline measured in
the same run; see each module's docstring for what it measures.

    python -m benchmarks [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

SUITES = {
    "peers": (["--seconds", "10", "--rounds", "3"], ["--seconds", "4", "--rounds", "1"]),
    "tail": (["--seconds", "6", "--rounds", "3"], ["--seconds", "4", "--rounds", "1"]),
    "layers": (["--seconds", "4", "--rounds", "5"], ["--seconds", "3", "--rounds", "1"]),
    "encoding": ([], ["--repeat", "200"]),
    "http_api": (["--seconds", "10"], ["--seconds", "4"]),
    "row_security": ([], ["--statements", "1000"]),
    "sweeper": ([], ["--bookings", "2000"]),
    "live_updates": ([], ["--quick"]),
    "websocket_soak": ([], ["--cycles", "2000"]),
    "webhooks": ([], ["--statements", "500", "--rounds", "2", "--events", "500"]),
    "check": ([], ["--packages", "2000"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, smaller sizes")
    parser.add_argument("--only", choices=sorted(SUITES), action="append")
    args = parser.parse_args()
    failed = []
    for name, (full, quick) in SUITES.items():
        if args.only and name not in args.only:
            continue
        print(f"\n=== benchmarks.{name}", flush=True)
        started = time.monotonic()
        command = [sys.executable, "-m", f"benchmarks.{name}", *(quick if args.quick else full)]
        if subprocess.run(command).returncode != 0:
            failed.append(name)
        print(f"=== {name}: {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
