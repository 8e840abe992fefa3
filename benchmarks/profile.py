"""Where a punchcard server's CPU goes under useSession (or calendar) load: py-spy samples
the server while wrk drives it, and the samples are summed by the layer they fall in.

Needs py-spy (``pip install py-spy``; it reads the process's memory, so root or ptrace
rights). Prints, for each layer, the share of samples whose stack passes through it
(inclusive: a layer's share includes what it calls), then the hottest functions by
their own samples.

    python -m benchmarks.profile [--work useSession|calendar] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    bin_path,
    free_port,
    fresh_database,
    listening_process,
    serving,
    wrk,
)
from benchmarks.http_api import CALENDAR_BODY, USE_BODY, seed
from punchcard.gql.auth import issue_token
from punchcard.settings import DEV_JWT_SECRET, Settings

# Layer: substrings of a py-spy frame ("function (file:line)") that put a sample in it.
LAYERS = {
    "uvicorn HTTP protocol": ("httptools_impl.py",),
    "Observe middleware": ("observe.py",),
    "GraphQL endpoint (gql/http.py) itself": ("gql/http.py",),
    "authenticate (token cache)": ("authenticate (", "auth.py"),
    "parse/validate (document cache)": ("documents.py",),
    "graphql-core execution": ("graphql/execution",),
    "resolvers": ("resolvers/",),
    "asyncpg (protocol, records)": ("asyncpg",),
    "JSON encoding (orjson, json)": ("json_bytes.py", "json/encoder.py"),
    "response shaping (results, media)": ("results.py", "media.py"),
    "event loop (uvloop, asyncio)": ("uvloop", "asyncio/"),
    "garbage collection": ("<gc>", "(gc)"),
}


def profile(work: str, seconds: int, keep: Path | None = None) -> str:
    spy = shutil.which("py-spy") or bin_path("py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is missing: pip install py-spy")
    body, ids_of = (USE_BODY, "packages") if work == "useSession" else (CALENDAR_BODY, "one")
    with fresh_database() as url, tempfile.TemporaryDirectory() as tmp:
        packages, _ = asyncio.run(seed(url))
        ids = packages if ids_of == "packages" else [0]
        token = issue_token(Settings(), "bench-trainer", ttl_seconds=3600)
        env = {**os.environ, "DATABASE_URL": url, "JWT_SECRET": DEV_JWT_SECRET}
        port = free_port()
        command = [bin_path("punchcard"), "serve", "--port", str(port), "--log-level", "warning"]
        with serving(command, env, port) as base:
            pid = listening_process(port).pid
            wrk(f"{base}/graphql", body_template=body, ids=ids, token=token, seconds=2)
            out = Path(tmp) / "samples.txt"
            sampler = subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
                 "--duration", str(seconds), "--rate", "250", "--gil", "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(0.5)
            load = wrk(f"{base}/graphql", body_template=body, ids=ids, token=token,
                       seconds=seconds)  # fmt: skip
            sampler.wait(seconds + 30)
            if keep is not None:
                shutil.copyfile(out, keep)
            return summary(out.read_text(), f"{work}: {load.rps:.0f} req/s under the sampler")


def summary(raw: str, title: str, top: int = 40) -> str:
    total = 0
    layers: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for layer, marks in LAYERS.items():
            if any(mark in frame for frame in frames for mark in marks):
                layers[layer] += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{title}; {total} samples with the GIL held", "inclusive share by layer:"]
    for layer, count in layers.most_common():
        lines.append(f"  {count / total:6.1%}  {layer}")
    lines.append("hottest functions (own samples):")
    for frame, count in own.most_common(15):
        lines.append(f"  {count / total:6.1%}  {frame[:110]}")
    lines.append("hottest functions (inclusive: with what they call):")
    for frame, count in inclusive.most_common(top):
        lines.append(f"  {count / total:6.1%}  {frame[:110]}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", choices=("useSession", "calendar"), default="useSession")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="also write py-spy's raw samples here")
    args = parser.parse_args()
    print(profile(args.work, args.seconds, args.keep))
