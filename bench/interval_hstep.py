"""Offline comparison of interval scales: one scale from the one-step errors against one per
horizon step from the sums of the last h one-step errors.

    .venv/bin/python -m bench.interval_hstep --cache DIR [--seeds 42 1 2]

Trains (or reads from DIR) the models of bench.interval_coverage for each development series
(macrodata realgdp and cpi, nile, elnino; never sunspots or co2) and seed: the validated
model the widths are calibrated with and the served (refit) model. From their one-step
errors and their 1- and 5-step forecasts it scores each method on the test spans: the share
of the actual values within the 80 % and 95 % intervals, the cells in 75-85 % / 90-98 %, and
the total miss (the sum over the cells of |coverage - level|, in points). Methods:

- one-scale: today's normalized-conformal scale, sqrt(base + m), m an exponentially weighted
  mean (weight 0.8 on the previous value) of the squared one-step errors, one per target;
- per-step: per step h, sqrt(base_h + m_h), m_h the same mean of the squared sum of the last
  h one-step errors, base_h the validation mean of those squared sums;
- per-step, longer memory: the same, with weight 0.8 ** (1 / h) for step h.

Each cell also gets the probability that an exactly calibrated interval lands in the target
range on n independent rows (Binomial(n, level)): what any method can be expected to reach.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import binom

from bench.interval_coverage import (
    LEVELS,
    RANGES,
    STEPS,
    _err,
    _write_series,
    bench_config,
    in_range,
)
from training.data import load_csv
from training.evaluate import path_levels
from training.intervals import GRID, conformal_widths, one_step_errors, running_mean_square
from training.pipeline import Trained, refit_trained, shifted, train

HORIZON = max(STEPS)


def _collect(trained: Trained, span: tuple[int, int]) -> dict[str, np.ndarray]:
    """The one-step errors of model rows [0, end) and the h-step errors from origins
    start - 1 .. end - 2 (NaN where the forecast row is past `end`)."""
    t, series, mseries = trained.transform, trained.series, trained.model_series
    start, end = span
    e1 = one_step_errors(trained.model, mseries, trained.scalers, end, t, series)[:, 0]
    origins = np.arange(start - 1, end - 1)
    paths = path_levels(trained.model, mseries, trained.scalers, origins, HORIZON, t, series)
    errs = np.full((origins.shape[0], HORIZON), np.nan)
    for h in range(1, HORIZON + 1):
        valid = origins + h < end
        rows = origins[valid] + h + t.lag
        errs[valid, h - 1] = _err(t, series.targets[rows, 0], paths[valid, h - 1, 0])
    return {"e1": e1, "origins": origins, "errs": errs}


def cell_data(validated: Trained, served: Trained) -> dict[str, np.ndarray]:
    """What the methods are scored from: the validated model's one-step errors up to the end
    of validation and its h-step errors from the validation origins (calibration), and the
    served model's over the whole series and from the test origins."""
    msplit = shifted(validated.split, validated.transform.lag)
    val = _collect(validated, (msplit.train_end, msplit.val_end))
    test = _collect(served, (msplit.val_end, msplit.rows))
    return {
        "val_e1": val["e1"],
        "val_origins": val["origins"],
        "val_errs": val["errs"],
        "test_e1": test["e1"],
        "test_origins": test["origins"],
        "test_errs": test["errs"],
        "train_end": np.array(msplit.train_end),
        "val_end": np.array(msplit.val_end),
    }


def collect(
    cache: Path, seeds: list[int], epochs: int
) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    cache.mkdir(parents=True, exist_ok=True)
    out: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, col, season, test_rows) in _write_series(Path(tmp)).items():
            for seed in seeds:
                file = cache / f"{name.replace(' ', '_')}_{seed}.npz"
                if file.exists():
                    out[(name, seed)] = dict(np.load(file))
                    continue
                series = load_csv(path, [col], [col])
                cfg = bench_config(series, test_rows, season, epochs, "gru", seed)
                validated = train(series, cfg)
                data = cell_data(validated, refit_trained(validated))
                np.savez(file, **data)  # type: ignore[arg-type]
                out[(name, seed)] = data
    return out


def sums(e1: np.ndarray, h: int) -> np.ndarray:
    """S_h[t] = e1[t] + ... + e1[t - h + 1], NaN where any is missing."""
    out = np.full(e1.shape[0], np.nan)
    for t in range(h - 1, e1.shape[0]):
        out[t] = e1[t - h + 1 : t + 1].sum()
    return out


class Method:
    """A scale per step h: sqrt(base_h + m_h), m_h the exponentially weighted mean (weight
    decay(h) on the previous value) of the squared sum of the last k(h) one-step errors."""

    def __init__(self, k: Callable[[int], int], decay: Callable[[int], float]) -> None:
        self.k, self.decay = k, decay

    def base(self, e1: np.ndarray, h: int, train_end: int, val_end: int) -> float:
        """The validation mean of the squared sums (every summed error a validation one)."""
        k = self.k(h)
        return float(np.nanmean(sums(e1, k)[train_end + k - 1 : val_end] ** 2))

    def scale(self, e1: np.ndarray, h: int, base: float) -> np.ndarray:
        """The scale after each row, m_h started at the base at row 0."""
        s = sums(e1, self.k(h))
        m = running_mean_square(s[:, None], np.array([base]), self.decay(h))[:, 0]
        return np.asarray(np.sqrt(base + m))


METHODS: dict[str, Method] = {
    "one-scale": Method(lambda h: 1, lambda h: 0.8),
    "per-step": Method(lambda h: h, lambda h: 0.8),
    "per-step, longer memory": Method(lambda h: h, lambda h: 0.8 ** (1.0 / h)),
}


def evaluate(
    data: dict[str, np.ndarray], method: Method
) -> dict[tuple[int, float], tuple[float, int]]:
    """Per (step, level): the test span's share covered and its rows."""
    train_end, val_end = int(data["train_end"]), int(data["val_end"])
    out = {}
    for h in STEPS:
        # Calibration: the validated model, its scale at each validation origin.
        base = method.base(data["val_e1"], h, train_end, val_end)
        scale = method.scale(data["val_e1"], h, base)
        o, err = data["val_origins"], data["val_errs"][:, h - 1]
        ok = np.isfinite(err)
        widths = conformal_widths(err[ok] / scale[o[ok]])
        # Test: the served model, its scale followed over the whole series from the base.
        scale = method.scale(data["test_e1"], h, base)
        o, err = data["test_origins"], data["test_errs"][:, h - 1]
        ok = np.isfinite(err)
        for p in LEVELS:
            w = np.interp(p, GRID, widths) * scale[o[ok]]
            out[(h, p)] = (float(np.mean(np.abs(err[ok]) <= w)), int(ok.sum()))
    return out


def in_range_probability(n: int, p: float) -> float:
    lo, hi = RANGES[p]
    k_lo, k_hi = math.ceil(lo * n - 1e-9), math.floor(hi * n + 1e-9)
    return float(binom.cdf(k_hi, n, p) - binom.cdf(k_lo - 1, n, p))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="trained cells kept here")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    data = collect(args.cache, args.seeds, args.epochs)
    results = {m: {key: evaluate(d, METHODS[m]) for key, d in data.items()} for m in METHODS}
    names = sorted({key[0] for key in data}, key=[key[0] for key in data].index)
    head = ["series", "step", "n", "P(in range): 80 % / 95 %"]
    head += [f"{m}: {int(100 * p)} %" for m in METHODS for p in LEVELS]
    print("| " + " | ".join(head) + " |")
    print("| --- " * len(head) + "|")
    expected = 0.0
    for name in names:
        for h in STEPS:
            n = results["one-scale"][(name, args.seeds[0])][(h, 0.8)][1]
            probs = [in_range_probability(n, p) for p in LEVELS]
            expected += len(args.seeds) * sum(probs)
            cells = [
                " / ".join(_mark(results[m][(name, seed)][(h, p)][0], p) for seed in args.seeds)
                for m in METHODS
                for p in LEVELS
            ]
            row = [name, str(h), str(n), f"{probs[0]:.2f} / {probs[1]:.2f}", *cells]
            print("| " + " | ".join(row) + " |")
    print(f"\n(seeds {' / '.join(map(str, args.seeds))}; in bold: outside 75-85 % or 90-98 %)")
    total = len(data) * len(STEPS) * len(LEVELS)
    print(
        f"exactly calibrated intervals: {expected:.1f} of {total} in range expected "
        "(n independent rows)"
    )
    for m in METHODS:
        met, miss, outside = 0, 0.0, 0.0
        per_seed = dict.fromkeys(args.seeds, 0)
        for key in data:
            for (_, p), (share, _) in results[m][key].items():
                lo, hi = RANGES[p]
                met += in_range(share, p)
                per_seed[key[1]] += in_range(share, p)
                miss += 100 * abs(share - p)
                outside += 100 * max(lo - share, share - hi, 0.0)
        seeds = " / ".join(str(per_seed[s]) for s in args.seeds)
        print(
            f"{m}: {met} of {total} in range ({seeds}), total miss {miss:.1f} points, "
            f"outside the ranges {outside:.1f} points"
        )


def _mark(share: float, p: float) -> str:
    text = f"{100 * share:.1f}"
    return text if in_range(share, p) else f"**{text}**"


if __name__ == "__main__":
    main()
