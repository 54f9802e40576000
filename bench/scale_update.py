"""CPU of the adaptive intervals' running scale per predict batch: series one at a time
against series of one length together (service.transforms.ErrorScale).

    .venv/bin/python -m bench.scale_update [--series 16] [--length 20]

Every predict of a model with normalized-conformal intervals updates each series' scale,
whether intervals are asked for or not; the runner batches concurrent requests, so a
batch of 16 one-series requests updates 16 scales. Prints µs per batch, best of 5 passes.
"""

from __future__ import annotations

import argparse
import timeit
from types import SimpleNamespace
from typing import Any

import numpy as np

from service.inference import SeriesInput, SeriesOutput
from service.transforms import ErrorScale


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--series", type=int, default=16)
    parser.add_argument("--length", type=int, default=20)
    args = parser.parse_args()
    intervals = SimpleNamespace(decay=0.8, base=[0.02], space="levels")
    manifest: Any = SimpleNamespace(intervals=intervals, features=["v"], targets=["v"])
    scale = ErrorScale(manifest)
    rng = np.random.default_rng(0)
    inputs = [
        SeriesInput(
            values=rng.normal(size=(args.length, 1)).astype(np.float32),
            scale=np.array([[0.1], [0.2]], np.float32),
        )
        for _ in range(args.series)
    ]
    results = [
        SeriesOutput(
            predictions=rng.normal(size=(args.length, 1)).astype(np.float32),
            forecast=np.zeros((1, 1)),
            h=np.zeros((1, 4)),
            c=None,
        )
        for _ in range(args.series)
    ]

    def one_at_a_time() -> None:
        for s, out in zip(inputs, results, strict=True):
            out.scale = scale.update(s.scale, s.values, out.predictions)

    def together() -> None:
        scale.update_all(inputs, results)

    n = 2000
    for name, run in (("one series at a time", one_at_a_time), ("together", together)):
        best = min(timeit.repeat(run, number=n, repeat=5)) / n * 1e6
        print(f"{name}: {best:.1f} µs per batch of {args.series} series of {args.length}")


if __name__ == "__main__":
    main()
