"""CPU time one predict request costs the service in process, for two sets of settings.

The ASGI app is called in this process as bench/request_opcodes.py calls it (no
sockets: 16 requests at a time, one series of 20 values with a state each), and the
process's CPU time is read around each block of `--rounds` rounds, the two apps taking
turns for `--blocks` blocks (a, b, b, a, ...), so both see the machine alike. This
measures what the service's own code costs, Python and C alike (ONNX Runtime, JSON),
without the HTTP server and the kernel's socket work that a throughput run adds on top.

    .venv/bin/python -m bench.request_cpu                      # metrics on against off
    .venv/bin/python -m bench.request_cpu --b SEQCAST_ACCESS_LOG=true
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.request_opcodes import BATCH, predict, settings_parser, two_apps


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        name, path, apps, body = await two_apps(Path(tmp), args)

        async def rounds(key: str, n: int) -> None:
            for _ in range(n):
                await asyncio.gather(*(predict(*apps[key], path, body) for _ in range(BATCH)))

        for key in apps:
            await rounds(key, 100)  # warm-up: every lazy path taken, caches filled
        per_request: dict[str, list[float]] = {"a": [], "b": []}
        for block in range(args.blocks):
            for key in ("a", "b") if block % 2 == 0 else ("b", "a"):
                before = time.process_time()
                await rounds(key, args.rounds)
                took = time.process_time() - before
                per_request[key].append(took / (args.rounds * BATCH) * 1e6)
    a, b = (statistics.median(per_request[k]) for k in ("a", "b"))
    print(f"a = {' '.join(args.a) or 'defaults'}; b = {' '.join(args.b) or 'defaults'}")
    print(f"model {name}; {args.blocks} blocks of {args.rounds * BATCH} requests per app")
    for key in ("a", "b"):
        blocks = " ".join(f"{x:.1f}" for x in per_request[key])
        median = statistics.median(per_request[key])
        print(f"{key}: CPU µs per request, median {median:.2f} ({blocks})")
    print(f"a - b: {a - b:+.2f} µs per request; a ÷ b: {a / b:.4f}")


def main() -> int:
    parser = settings_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=150, help="rounds of 16 per block")
    parser.add_argument("--blocks", type=int, default=16, help="blocks per app")
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
