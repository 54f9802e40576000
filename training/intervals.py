"""Prediction intervals by conformal prediction, one width per horizon step.

The validated model (before any refit) forecasts the validation rows from every origin in
that span, 1 to `steps` steps ahead, state carried as the service carries it. Errors are in
levels, or in log units for a log transform (intervals then scale with the level).

- normalized-conformal (when every target is also an input, so the service sees the values
  its one-step predictions are scored against): each error is divided by a scale known at
  its origin, s = sqrt(base + m), where m is an exponentially weighted mean of the squared
  one-step errors up to the origin (weight DECAY on the previous value, started at `base`,
  the mean squared one-step validation error). The width at a level is the conformal
  quantile of these scores times the scale at the forecast's origin, so intervals widen
  when recent errors grow (a calmer validation span than the test span no longer leaves
  them too narrow). The service carries m and the last one-step prediction in the state.
- split-conformal otherwise: the widths are the quantiles of the errors themselves.

For each step the scores give the width that covers a share p of them, with the
finite-sample correction (the ceil((n + 1) p)-th smallest of n). Widths are kept for
p = 0, 0.01, ..., 1 so the service can answer any level by interpolation.

DECAY and the base term were chosen on the development series (macrodata realgdp and cpi,
the Nile, El Niño) with docs/forecasting-real-data.md's bench: a memory of about five steps
follows a change of volatility within a year of quarterly data, and the base term keeps one
lucky small error from shrinking the scale towards zero (which made 95 % intervals far too
wide, from the few scores with a tiny scale).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from training.data import Series, Split
from training.evaluate import path_levels, torch_runner
from training.manifest import TargetTransform
from training.models import Forecaster
from training.scalers import Scaler, apply, invert
from training.transforms import log_of, to_levels

MAX_STEPS = 12  # horizon steps calibrated (forecasts beyond get no intervals)
MIN_ERRORS = 10  # fewest validation errors a step is calibrated from
GRID = np.round(np.linspace(0.0, 1.0, 101), 2)  # the levels the widths are kept for
DECAY = 0.8  # weight of the previous mean square: a memory of about 1 / (1 - DECAY) steps


def conformal_widths(errors: np.ndarray) -> np.ndarray:
    """Widths (len(GRID),) from absolute errors (n,): the ceil((n + 1) p)-th smallest."""
    ordered = np.sort(np.abs(errors))
    n = ordered.shape[0]
    ranks = np.minimum(np.ceil((n + 1) * GRID).astype(int), n)  # 1-based; p = 0 gives 0
    widths = np.where(ranks >= 1, ordered[np.maximum(ranks, 1) - 1], 0.0)
    return widths


def running_mean_square(errors: np.ndarray, start: np.ndarray, decay: float) -> np.ndarray:
    """m after each row (n, O) of one-step errors (n, O), NaN where none (left as it was):
    m = decay * m + (1 - decay) * e ** 2, from `start` (O,)."""
    out = np.empty_like(errors, dtype=np.float64)
    m = start.astype(np.float64).copy()
    for i in range(errors.shape[0]):  # training side, once per model: plain is clearer
        e = errors[i]
        m = np.where(np.isfinite(e), decay * m + (1.0 - decay) * np.nan_to_num(e) ** 2, m)
        out[i] = m
    return out


def one_step_errors(
    model: Forecaster,
    series: Series,
    scalers: dict[str, Scaler],
    end: int,
    transform: TargetTransform,
    levels: Series | None,
) -> np.ndarray:
    """Errors (end, O) in interval units of the streaming one-step predictions of model rows
    [0, end) (row 0 has none: NaN), as the service scores them."""
    x = apply(scalers, series.feature_names, series.features).astype(np.float32)
    stream = torch_runner(model)(x[None, : end - 1])[0]  # (end - 1, O): of rows 1 .. end - 1
    pred = invert(scalers, series.target_names, stream)
    raw = series if levels is None else levels
    lag = transform.lag if levels is not None else 0
    rows = np.arange(1, end) + lag
    if levels is not None:
        pred = to_levels(transform, pred, raw.targets, rows)
    out = np.full((end, pred.shape[1]), np.nan)
    out[1:] = _error(transform, raw.targets[rows], pred)
    return out


def calibrate(
    model: Forecaster,
    series: Series,
    split: Split,
    scalers: dict[str, Scaler],
    transform: TargetTransform,
    levels: Series | None,
    adaptive: bool = True,
) -> dict[str, Any] | None:
    """The manifest's `intervals` block, or None when validation is too short
    (`adaptive` False: split-conformal even where normalized-conformal could be)."""
    n_val = split.n_val
    # Targets first among the inputs, and nothing after them but calendar features.
    known = len(series.time.calendar_columns) if series.time is not None else 0
    rollable = series.target_names == series.feature_names[: len(series.feature_names) - known]
    steps = min(MAX_STEPS if rollable else 1, n_val - MIN_ERRORS + 1)
    if steps < 1:
        return None
    raw = series if levels is None else levels
    lag = transform.lag if levels is not None else 0
    origins = np.arange(split.train_end - 1, split.val_end - 1)  # model rows
    paths = path_levels(model, series, scalers, origins, steps, transform, levels)  # (k, S, O)
    scale = None
    base = None
    if adaptive and set(series.target_names) <= set(series.feature_names):
        e1 = one_step_errors(model, series, scalers, split.val_end, transform, levels)
        base = np.mean(e1[split.train_end :] ** 2, axis=0)  # (O,) over the validation rows
        if np.all(np.isfinite(base)) and np.all(base > 0.0):
            m = running_mean_square(e1, base, DECAY)  # (val_end, O): after each row
            scale = np.sqrt(base + m[origins])  # (k, O): at each origin
    widths = []
    for h in range(steps):
        valid = origins + h + 1 < split.val_end  # the forecast row is in validation
        rows = origins[valid] + h + 1 + lag
        err = _error(transform, raw.targets[rows], paths[valid, h])  # (n, O)
        if scale is not None:
            err = err / scale[valid]
        per_target = [conformal_widths(err[:, o]) for o in range(err.shape[1])]
        widths.append([[_finite(w) for w in col] for col in per_target])
    block: dict[str, Any] = {
        "method": "split-conformal" if scale is None else "normalized-conformal",
        "space": transform.log or "levels",
        "calibration_rows": n_val,
        "levels": [float(p) for p in GRID],
        "widths": widths,  # [step][target][level]
    }
    if scale is not None and base is not None:
        block["decay"] = DECAY
        block["base"] = [float(b) for b in base]
    return block


def _error(transform: TargetTransform, actual: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """actual - pred in interval units (log units for a log transform)."""
    if transform.log is not None:
        return np.asarray(log_of(transform, actual) - log_of(transform, pred))
    return np.asarray(actual - pred)


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0
