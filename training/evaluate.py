"""Metrics in original units, of the test rows (and of the validation rows before them):
streaming, windowed, and the baselines beside them.

- streaming: one pass over the whole series from a zero state, state carried; the prediction
  made after row j - 1 is scored against row j for every test row j.
- windowed: each test row j is predicted from rows [j - window, j) alone, from a zero state.
- persistence: row j is predicted by row j - 1 (the naive baseline).
- noiseless (synthetic series only): row j is predicted by the true sine, the floor that no
  forecaster can beat in expectation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from training.data import Series, Split
from training.manifest import TargetTransform
from training.models import Forecaster
from training.scalers import Scaler, apply, invert
from training.transforms import paths_to_levels, to_levels

# Runs a model from a zero state: x (B, T, F) float32, scaled -> y (B, T, O) scaled.
Runner = Callable[[np.ndarray], np.ndarray]


def rmse(pred: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - actual) ** 2)))


def mae(pred: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - actual)))


def smape(pred: np.ndarray, actual: np.ndarray) -> float:
    """Symmetric MAPE in percent (0..200); a step where both are zero counts as no error."""
    denom = np.abs(pred) + np.abs(actual)
    safe = np.where(denom == 0.0, 1.0, denom)
    return float(100.0 * np.mean(np.where(denom == 0.0, 0.0, 2.0 * np.abs(pred - actual) / safe)))


def metrics(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    return {"rmse": rmse(pred, actual), "mae": mae(pred, actual), "smape": smape(pred, actual)}


def torch_runner(model: Forecaster) -> Runner:
    """A Runner over a torch model, on whatever device the model lives."""
    device = next(model.parameters()).device

    def run(x: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            y, _ = model(torch.from_numpy(x).to(device))
        out: np.ndarray = y.cpu().numpy()
        return out

    return run


@dataclass(frozen=True)
class Evaluation:
    """Test-split predictions in original units (n_test, O) and their metrics."""

    actual: np.ndarray
    predictions: dict[str, np.ndarray]  # streaming, windowed, persistence[, noiseless]
    metrics: dict[str, dict[str, float]]
    # The same ways on the validation rows, by the model validation chose (before any refit
    # on them): the figures to tune on, where the test metrics are only to report.
    validation: dict[str, dict[str, float]] | None = None
    # Forecasts 1 and 5 steps ahead beside the baselines (training.baselines.forecast_table).
    forecasts: dict[str, Any] | None = None

    def ratios(self) -> dict[str, float]:
        """Headline figures: RMSE relative to the floor (if known) and to persistence."""
        m = self.metrics
        out = {
            "streaming_vs_persistence": m["streaming"]["rmse"] / m["persistence"]["rmse"],
            "windowed_vs_persistence": m["windowed"]["rmse"] / m["persistence"]["rmse"],
        }
        if "noiseless" in m:
            out["streaming_vs_noiseless"] = m["streaming"]["rmse"] / m["noiseless"]["rmse"]
            out["windowed_vs_noiseless"] = m["windowed"]["rmse"] / m["noiseless"]["rmse"]
        return out

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"test": self.metrics, "ratios": self.ratios()}
        if self.validation is not None:
            out["validation"] = self.validation
        if self.forecasts is not None:
            out["forecasts"] = self.forecasts
        return out


def evaluate(
    run: Runner,
    series: Series,
    split: Split,
    scalers: dict[str, Scaler],
    window: int,
    validation: dict[str, dict[str, float]] | None = None,
    transform: TargetTransform | None = None,
    levels: Series | None = None,
) -> Evaluation:
    """Score the test rows [split.val_end, rows) every way a user forecasts.

    With a transform, `series` and `split` are in model units (rows of the transformed
    series) and `levels` is the original series: every figure is in levels.
    """
    actual, preds = _predict_span(
        run, series, scalers, window, split.val_end, split.rows, transform, levels
    )
    return Evaluation(
        actual=actual,
        predictions=preds,
        metrics={k: metrics(p, actual) for k, p in preds.items()},
        validation=validation,
    )


def evaluate_validation(
    run: Runner,
    series: Series,
    split: Split,
    scalers: dict[str, Scaler],
    window: int,
    transform: TargetTransform | None = None,
    levels: Series | None = None,
) -> dict[str, dict[str, float]]:
    """The same metrics on the validation rows [split.train_end, split.val_end)."""
    actual, preds = _predict_span(
        run, series, scalers, window, split.train_end, split.val_end, transform, levels
    )
    return {k: metrics(p, actual) for k, p in preds.items()}


def _predict_span(
    run: Runner,
    series: Series,
    scalers: dict[str, Scaler],
    window: int,
    start: int,
    end: int,
    transform: TargetTransform | None = None,
    levels: Series | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Actual values (end - start, O) and every way's predictions of rows [start, end),
    in levels (rows of `levels` are those of `series` shifted by the transform's lag)."""
    x = apply(scalers, series.feature_names, series.features).astype(np.float32)  # (N, F)
    names = series.target_names
    stream = run(x[None, : end - 1])[0, start - 1 :]  # (end - start, O)
    rows = np.arange(start, end)
    windows = x[rows[:, None] - window + np.arange(window)]  # (end - start, W, F)
    windowed = run(windows)[:, -1]  # (end - start, O)
    raw = series if levels is None else levels
    lag = transform.lag if transform is not None else 0
    level_rows = rows + lag  # the same rows in the original series

    def in_levels(pred: np.ndarray) -> np.ndarray:
        if transform is None:
            return pred
        return to_levels(transform, pred, raw.targets, level_rows)

    preds = {
        "streaming": in_levels(invert(scalers, names, stream)),
        "windowed": in_levels(invert(scalers, names, windowed)),
        "persistence": raw.targets[level_rows - 1],
    }
    if raw.clean_targets is not None:
        preds["noiseless"] = raw.clean_targets[level_rows]
    return raw.targets[level_rows], preds


def forecast_paths(
    model: Forecaster, x: np.ndarray, origins: np.ndarray, horizon: int
) -> np.ndarray:
    """Multi-step forecasts (k, horizon, O), scaled, made after each of the sorted rows
    `origins` of x (N, F) scaled: state carried from row 0 to the origin, then rolled forward
    on the model's own predictions, as the service rolls out (targets must be the first O
    features). Inputs after the first O (calendar features, known in advance) come from
    the rows being rolled over (the last row's past the end: those forecasts go unscored).
    """
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        states: list[Any] = []
        firsts = []
        state = None
        at = 0
        for origin in origins.tolist():  # one run per gap between origins: state carried
            y, state = model(xt[None, at : origin + 1], state)
            at = origin + 1
            states.append(state)
            firsts.append(y[:, -1])
        if isinstance(states[0], tuple):
            batch_state: Any = tuple(torch.cat([s[i] for s in states], dim=1) for i in range(2))
        else:
            batch_state = torch.cat(states, dim=1)  # (L, k, H)
        step = torch.cat(firsts)  # (k, O)
        out = [step]
        known = xt[:, step.shape[1] :]  # (N, F - O)
        last = xt.shape[0] - 1
        for k in range(1, horizon):
            rows = torch.from_numpy(np.minimum(origins + k, last)).to(device)
            y, batch_state = model(torch.cat([step, known[rows]], dim=1)[:, None], batch_state)
            step = y[:, 0]
            out.append(step)
        return np.asarray(torch.stack(out, dim=1).cpu().numpy())


def path_levels(
    model: Forecaster,
    series: Series,
    scalers: dict[str, Scaler],
    origins: np.ndarray,
    horizon: int,
    transform: TargetTransform | None = None,
    levels: Series | None = None,
) -> np.ndarray:
    """forecast_paths in levels: (k, horizon, O) forecasts of rows origin + 1 .. origin + horizon
    (rows of the model-unit `series`; `levels` the original series when transformed)."""
    x = apply(scalers, series.feature_names, series.features).astype(np.float32)
    scaled = forecast_paths(model, x, origins, horizon)
    k, _, o = scaled.shape
    paths = invert(scalers, series.target_names, scaled.reshape(k * horizon, o))
    paths = paths.reshape(k, horizon, o)
    if transform is None:
        return paths
    raw = series if levels is None else levels
    return paths_to_levels(transform, paths, raw.targets, origins + transform.lag)
