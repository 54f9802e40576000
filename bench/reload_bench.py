"""Reloads under concurrent load against a real `seqcast serve`: failures and latency.

One server (one worker, admin key on) serves m/1. ``--clients`` threads send predicts
naming no version (20 values, horizon 4) on keep-alive connections, and one more names
version 1, all along, while the script adds m/2, removes m/1 and adds a broken m/3, each
followed by POST /admin/reload. It reports every answer the contract does not allow
(expected: none), how long each reload took, and the predict latency (p50 / p99 / max)
outside the reloads and during them.

    .venv/bin/python -m bench.reload_bench                  # about 10 seconds
    .venv/bin/python -m bench.reload_bench --rounds 3 --settle 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench._common import ROOT


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return (
        f"p50 {statistics.median(values) * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
        f"max {values[-1] * 1e3:.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between steps")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.modelkit import write_model
    from tests.service.reload_support import publish, reload_under_load, serve, wrong_answers

    failed = 0
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            stock, root = Path(tmp) / "stock", Path(tmp) / "models"
            for version in (1, 2, 3):
                write_model(stock, "m", "lstm", version=version, hidden=32, seed=version)
            publish(stock, root, "m/1")
            with serve(root) as server:
                run = reload_under_load(
                    server.base, root, stock, clients=args.clients, settle_s=args.settle
                )
        wrong = wrong_answers(run)
        failed += len(wrong)
        windows = list(run.reloads.values())
        during = [
            s.ended - s.started
            for s in run.default
            if any(s.started < end and s.ended > start for start, end in windows)
        ]
        outside = [
            s.ended - s.started
            for s in run.default
            if not any(s.started < end and s.ended > start for start, end in windows)
        ]
        print(f"round {round_}: {len(run.default)} predicts naming no version, "
              f"{len(run.pinned)} naming version 1; answers the contract does not allow: "
              f"{len(wrong)}")  # fmt: skip
        for line in wrong[:5]:
            print("   ", line)
        for step, (start, end) in run.reloads.items():
            print(f"  {step}: reload took {(end - start) * 1e3:.1f} ms")
        print(f"  latency outside reloads ({len(outside)}): {_ms(outside)}")
        print(f"  latency overlapping a reload ({len(during)}): {_ms(during)}")
        statuses = sorted({s.status for s in run.pinned})
        print(f"  version-1 predicts answered with statuses {statuses}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
