"""Prediction intervals from a manifest's split-conformal widths (training/intervals.py).

The widths cover a share `levels[k]` of the validation errors at each horizon step; a
requested level between two kept ones is interpolated. Widths in log units (a log
transform) scale the interval with the forecast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.repository import LoadedModel


def intervals(
    model: LoadedModel, forecast: np.ndarray, levels: Sequence[float]
) -> list[dict[str, Any]]:
    """One {level, lower, upper} per requested level for a forecast (H, O) in levels.

    Checked beforehand (service.inputs.check_intervals): calibrated, H within its steps.
    """
    calibrated = model.manifest.intervals
    assert calibrated is not None
    grid = np.asarray(calibrated.levels)
    widths = np.asarray(calibrated.widths)[: forecast.shape[0]]  # (H, O, G)
    out = []
    for p in levels:
        k = int(np.searchsorted(grid, p))  # grid[k - 1] < p <= grid[k]
        lo, hi = grid[k - 1], grid[k]
        frac = (p - lo) / (hi - lo)
        w = widths[:, :, k - 1] * (1.0 - frac) + widths[:, :, k] * frac  # (H, O)
        f = forecast.astype(np.float64)
        if calibrated.space == "log":
            lower, upper = f * np.exp(-w), f * np.exp(w)
        elif calibrated.space == "log1p":
            z = np.log1p(np.maximum(f, 0.0))
            lower, upper = np.maximum(np.expm1(z - w), 0.0), np.expm1(z + w)
        else:
            lower, upper = f - w, f + w
        out.append({"level": p, "lower": _rows(lower), "upper": _rows(upper)})
    return out


def _rows(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows[:, 0] if rows.shape[1] == 1 else rows)
