"""What encoding an HTTP response costs: ``json.dumps`` (before issue 13) vs orjson
(``gql/json_bytes.py``), on the calendar's page and on useSession's answer, in the same
run, in-process (no server: the encoder alone).

    python -m benchmarks.encoding [--repeat 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import timeit
from typing import Any

from punchcard.gql import json_bytes

CALENDAR: dict[str, Any] = {
    "data": {
        "bookings": [
            {
                "id": f"bkg_{n}",
                "startsAt": "2027-03-01T00:00:00+00:00",
                "endsAt": "2027-03-01T01:00:00+00:00",
                "status": "CONFIRMED",
                "charged": False,
                "client": {"id": f"cli_{n % 100}", "name": f"Client {n % 100} Zoë"},
                "purchase": None
                if n % 4 == 0
                else {"id": f"pur_{n}", "sessionsRemaining": 999_999, "expiresAt": None},
            }
            for n in range(300)
        ]
    }
}
USE_SESSION = {"data": {"useSession": {"sessionsUsed": 5, "sessionsRemaining": 995, "revision": 5}}}


def before(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def main(repeat: int) -> str:
    lines = [f"{'body':22} {'bytes':>6} {'json us':>8} {'orjson us':>9} {'speed-up':>8}"]
    for name, body in (("calendar, 300 bookings", CALENDAR), ("useSession", USE_SESSION)):
        assert json.loads(json_bytes.dumps(body)) == json.loads(before(body))
        old, new = [], []
        for _ in range(5):  # taking turns, so drift hits both
            old.append(timeit.timeit(lambda b=body: before(b), number=repeat) / repeat * 1e6)
            new.append(
                timeit.timeit(lambda b=body: json_bytes.dumps(b), number=repeat) / repeat * 1e6
            )
        o, n = statistics.median(old), statistics.median(new)
        lines.append(f"{name:22} {len(json_bytes.dumps(body)):6} {o:8.1f} {n:9.1f} {o / n:8.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2000)
    print(main(parser.parse_args().repeat))
