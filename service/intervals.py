"""Prediction intervals from a manifest's conformal widths (training/intervals.py).

The widths cover a share `levels[k]` of the validation errors at each horizon step; a
requested level between two kept ones is interpolated. Widths in log units (a log
transform) scale the interval with the forecast.

Normalized-conformal widths are multiples of a scale known at the forecast origin,
sqrt(base + m): m is an exponentially weighted mean of the squared one-step errors (in the
widths' units) that the stream has seen. The state carries it (service.transforms
ErrorScale): m, and the last one-step prediction, which the next call's first value is
scored against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.repository import LoadedModel


def intervals(
    model: LoadedModel,
    forecast: np.ndarray,
    levels: Sequence[float],
    scale: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One {level, lower, upper} per requested level for a forecast (H, O) in levels;
    `scale`: the stream's scale state after its values (normalized-conformal models).

    Checked beforehand (service.inputs.check_intervals): calibrated, H within its steps.
    """
    calibrated = model.manifest.intervals
    assert calibrated is not None
    grid = np.asarray(calibrated.levels)
    widths = np.asarray(calibrated.widths)[: forecast.shape[0]]  # (H, O, G)
    if model.error_scale is not None:
        state = model.error_scale.fresh() if scale is None else scale
        widths = widths * model.error_scale.scale(state)[None, :, None]
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
