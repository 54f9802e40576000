"""Prediction intervals by split conformal prediction, one width per horizon step.

The validated model (before any refit) forecasts the validation rows from every origin in
that span, 1 to `steps` steps ahead, state carried as the service carries it. For each
step the absolute errors give the width that covers a share p of them, with the
finite-sample correction (the ceil((n + 1) p)-th smallest of n errors). Widths are kept
for p = 0, 0.01, ..., 1 so the service can answer any level by interpolation. Errors are
in levels, or in log units for a log transform (intervals then scale with the level).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from training.data import Series, Split
from training.evaluate import path_levels
from training.manifest import TargetTransform
from training.models import Forecaster
from training.scalers import Scaler
from training.transforms import log_of

MAX_STEPS = 12  # horizon steps calibrated (forecasts beyond get no intervals)
MIN_ERRORS = 10  # fewest validation errors a step is calibrated from
GRID = np.round(np.linspace(0.0, 1.0, 101), 2)  # the levels the widths are kept for


def conformal_widths(errors: np.ndarray) -> np.ndarray:
    """Widths (len(GRID),) from absolute errors (n,): the ceil((n + 1) p)-th smallest."""
    ordered = np.sort(np.abs(errors))
    n = ordered.shape[0]
    ranks = np.minimum(np.ceil((n + 1) * GRID).astype(int), n)  # 1-based; p = 0 gives 0
    widths = np.where(ranks >= 1, ordered[np.maximum(ranks, 1) - 1], 0.0)
    return widths


def calibrate(
    model: Forecaster,
    series: Series,
    split: Split,
    scalers: dict[str, Scaler],
    transform: TargetTransform,
    levels: Series | None,
) -> dict[str, Any] | None:
    """The manifest's `intervals` block, or None when validation is too short."""
    n_val = split.n_val
    rollable = series.target_names == series.feature_names
    steps = min(MAX_STEPS if rollable else 1, n_val - MIN_ERRORS + 1)
    if steps < 1:
        return None
    raw = series if levels is None else levels
    lag = transform.lag if levels is not None else 0
    origins = np.arange(split.train_end - 1, split.val_end - 1)  # model rows
    paths = path_levels(model, series, scalers, origins, steps, transform, levels)  # (k, S, O)
    space = transform.log or "levels"
    widths = []
    for h in range(steps):
        valid = origins + h + 1 < split.val_end  # the forecast row is in validation
        rows = origins[valid] + h + 1 + lag
        actual = raw.targets[rows]  # (n, O)
        pred = paths[valid, h]
        if transform.log is not None:
            err = log_of(transform, actual) - log_of(transform, pred)
        else:
            err = actual - pred
        per_target = [conformal_widths(err[:, o]) for o in range(err.shape[1])]
        widths.append([[_finite(w) for w in col] for col in per_target])
    return {
        "method": "split-conformal",
        "space": space,
        "calibration_rows": n_val,
        "levels": [float(p) for p in GRID],
        "widths": widths,  # [step][target][level]
    }


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0
