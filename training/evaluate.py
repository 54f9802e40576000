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
from training.models import Forecaster
from training.scalers import Scaler, apply, invert

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
) -> Evaluation:
    """Score the test rows [split.val_end, rows) every way a user forecasts."""
    actual, preds = _predict_span(run, series, scalers, window, split.val_end, split.rows)
    return Evaluation(
        actual=actual,
        predictions=preds,
        metrics={k: metrics(p, actual) for k, p in preds.items()},
        validation=validation,
    )


def evaluate_validation(
    run: Runner, series: Series, split: Split, scalers: dict[str, Scaler], window: int
) -> dict[str, dict[str, float]]:
    """The same metrics on the validation rows [split.train_end, split.val_end)."""
    actual, preds = _predict_span(run, series, scalers, window, split.train_end, split.val_end)
    return {k: metrics(p, actual) for k, p in preds.items()}


def _predict_span(
    run: Runner,
    series: Series,
    scalers: dict[str, Scaler],
    window: int,
    start: int,
    end: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Actual values (end - start, O) and every way's predictions of rows [start, end)."""
    x = apply(scalers, series.feature_names, series.features).astype(np.float32)  # (N, F)
    names = series.target_names
    stream = run(x[None, : end - 1])[0, start - 1 :]  # (end - start, O)
    rows = np.arange(start, end)
    windows = x[rows[:, None] - window + np.arange(window)]  # (end - start, W, F)
    windowed = run(windows)[:, -1]  # (end - start, O)
    preds = {
        "streaming": invert(scalers, names, stream),
        "windowed": invert(scalers, names, windowed),
        "persistence": series.targets[start - 1 : end - 1],
    }
    if series.clean_targets is not None:
        preds["noiseless"] = series.clean_targets[start:end]
    return series.targets[start:end], preds
