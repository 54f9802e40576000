"""Multi-step forecasts scored by rolling origin, for the model and for the baselines beside it.

Every way is scored the same way, in original units, on the same rows: each row j of the
span is forecast h steps ahead from the origin j - h, knowing rows [0, j - h] only. At
h = 1 the model's figure is its streaming one-step figure.

- seqcast: the model carries its state over rows [0, origin], then rolls forward on its own
  predictions (possible when the targets are the inputs).
- persistence: row j - h.
- seasonal naive: the last row of the same season, j - m * ceil(h / m).
- arima, ets (statsmodels, optional): fitted on the rows before the span only (the rows the
  final model was fitted on), the parameters then fixed; each origin filters the data up to
  it and forecasts. The orders are chosen by AIC over a small table on the same rows.

The season m comes from --season, else from the time column's frequency (monthly 12,
quarterly 4, weekly 52, daily 7, hourly 24), else from the autocorrelation of the fitted rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import torch

from training import transforms
from training.data import Series, _time_key
from training.evaluate import forecast_paths, metrics, path_levels
from training.manifest import TargetTransform
from training.models import Forecaster, State
from training.scalers import Scaler, apply, invert
from training.statistical import StatResult
from training.statistical import available as statistical_available
from training.statistical import forecast as statistical_forecast
from training.statistical import start as start_statistical

log = logging.getLogger(__name__)

HORIZONS = (1, 5)
# Mean spacing of the time column (days) -> the season it implies, with a tolerance.
_PERIODS = ((1 / 24, 24), (1.0, 7), (7.0, 52), (30.44, 12), (91.3, 4))
_MAX_SEASON = 400  # longest season the autocorrelation looks for
_ACF_MIN = 0.5  # a detected season's autocorrelation must reach this (noise reaches 0.3)


# -- the season --------------------------------------------------------------------------


def season_from_times(times: Sequence[str] | None) -> int | None:
    """The season implied by a date/time column's spacing; None for numbers or no match."""
    if times is None or len(times) < 3:
        return None
    keys = [_time_key(t) for t in times]
    if not all(isinstance(k, datetime) for k in keys):
        return None
    stamps = [k.timestamp() if k.tzinfo else k.replace(tzinfo=None).timestamp() for k in keys]  # type: ignore[union-attr]
    days = float(np.median(np.diff(stamps))) / 86400.0
    for spacing, season in _PERIODS:
        if abs(days - spacing) <= 0.1 * spacing:
            return season
    return None


def detect_season(values: np.ndarray) -> int | None:
    """The lag of the highest autocorrelation peak of `values` (N,), if it is a clear one."""
    x = values - values.mean()
    n = x.shape[0]
    top = min(_MAX_SEASON, n // 3)
    if top < 2 or not np.any(x):
        return None
    denom = float(x @ x)
    acf = np.array([float(x[:-k] @ x[k:]) / denom for k in range(1, top + 1)])  # acf[k-1]
    best, best_value = None, _ACF_MIN
    for k in range(2, top):  # local maxima only: a trend's acf decays from lag 1
        a = acf[k - 1]
        if a > acf[k - 2] and a >= acf[k] and a > best_value:
            best, best_value = k, a
    return best


def choose_season(series: Series, fitted_rows: int, given: int | None) -> tuple[int, str]:
    """(season, where it came from); season 1 means none."""
    if given is not None:
        return given, "given (--season)"
    from_times = season_from_times(series.times)
    if from_times is not None:
        return from_times, f"from the spacing of {series.time_name!r}"
    detected = detect_season(series.targets[:fitted_rows, 0])
    if detected is not None:
        return detected, "detected (autocorrelation of the fitted rows)"
    return 1, "none found"


# -- forecasts from every origin ---------------------------------------------------------


def naive_paths(y: np.ndarray, origins: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """(n_origins, horizon, O) forecasts of rows origin + 1 .. origin + horizon.

    Season 1 is persistence: the value at the origin, held.
    """
    steps = np.arange(1, horizon + 1)
    back = season * np.ceil(steps / season).astype(int)  # (H,) rows back from the target
    rows = origins[:, None] + steps[None, :] - back[None, :]
    out: np.ndarray = y[rows]
    return out


def model_paths(
    model: Forecaster, x: np.ndarray, origins: np.ndarray, horizon: int, feedback: np.ndarray
) -> np.ndarray:
    """(n_origins, horizon, O) scaled forecasts: state carried over rows [0, origin], then
    the model rolled forward on its own predictions.

    x (N, F) scaled float32; feedback (F,) the output column each input takes when rolling
    forward (horizon 1 needs none).
    """
    model = model.cpu().eval()
    last = int(origins.max())
    states: dict[int, State] = {}
    preds = np.empty((origins.shape[0], horizon, model.output_size), np.float32)
    wanted = {int(o): i for i, o in enumerate(origins)}
    with torch.no_grad():
        xt = torch.from_numpy(np.ascontiguousarray(x[: last + 1], dtype=np.float32))[None]
        first = int(origins.min())
        # One pass to the first origin, then step by step: the state at every origin.
        y, state = model(xt[:, : first + 1])
        step_y = {first: y[0, -1]}
        states[first] = state
        for t in range(first + 1, last + 1):
            y, state = model(xt[:, t : t + 1], state)
            step_y[t] = y[0, -1]
            if t in wanted:
                states[t] = state
        order = sorted(wanted)
        preds[[wanted[o] for o in order], 0] = torch.stack([step_y[o] for o in order]).numpy()
        if horizon > 1:
            state = _stack_states([states[o] for o in order])
            prev = torch.stack([step_y[o] for o in order])  # (B, O)
            fb = torch.from_numpy(feedback)
            for h in range(1, horizon):
                y, state = model(prev[:, fb][:, None, :], state)
                prev = y[:, 0]
                preds[[wanted[o] for o in order], h] = prev.numpy()
    return preds


def _stack_states(states: list[State]) -> State:
    """Per-origin states (L, 1, H) stacked along the batch: (L, B, H)."""
    first = states[0]
    if isinstance(first, tuple):
        hs = torch.cat([s[0] for s in states], dim=1)
        cs = torch.cat([s[1] for s in states], dim=1)
        return hs, cs
    return torch.cat(states, dim=1)  # type: ignore[arg-type]


def feedback_columns(series: Series) -> np.ndarray | None:
    """Which output feeds each input when rolling forward; None when the inputs are not all
    targets (then only one step ahead can be forecast)."""
    targets = list(series.target_names)
    if not set(series.feature_names) <= set(targets):
        return None
    return np.array([targets.index(f) for f in series.feature_names], dtype=np.int64)


def known_ahead(series: Series) -> bool:
    """Whether the inputs are the targets, in order, then calendar features only: known in
    advance from the stamps, so the model rolls forward on its own predictions for the
    targets and the calendar of the rows it forecasts (training.evaluate.forecast_paths)."""
    if series.time is None or not series.time.calendar:
        return False
    o = len(series.target_names)
    features = list(series.feature_names)
    return (
        features[:o] == list(series.target_names) and features[o:] == series.time.calendar_columns
    )


def rollable(series: Series) -> bool:
    """Whether forecasts beyond one step can be made and scored."""
    return feedback_columns(series) is not None or known_ahead(series)


@dataclass(frozen=True)
class Span:
    """Rows [start, end) to score and the data every forecaster may read."""

    series: Series
    start: int
    end: int

    def origins(self, horizon: int) -> np.ndarray:
        return np.arange(self.start - horizon, self.end - 1)

    def actual(self) -> np.ndarray:
        out: np.ndarray = self.series.targets[self.start : self.end]
        return out


def score_paths(
    paths: np.ndarray, span: Span, horizons: Sequence[int]
) -> dict[int, dict[str, float]]:
    """Metrics per horizon of paths from origins span.origins(max(horizons))."""
    hmax = max(horizons)
    actual = span.actual()
    n = span.end - span.start
    out = {}
    for h in horizons:
        # Row start + i comes from origin start + i - h, whose index is hmax - h + i.
        first = hmax - h
        pred = paths[first : first + n, h - 1]
        out[h] = metrics(pred, actual)
    return out


def model_scores(
    model: Forecaster,
    series: Series,
    scalers: dict[str, Scaler],
    span: Span,
    horizons: Sequence[int] = HORIZONS,
    transform: TargetTransform | None = None,
) -> tuple[dict[int, dict[str, float]], dict[int, np.ndarray]]:
    """The model's metrics per horizon (original units) and its forecasts of each row.

    `series` is the series as read; with a transform the model runs on the transformed
    series and its forecasts are rebuilt in levels (training.evaluate.path_levels).
    """
    feedback = feedback_columns(series)
    if not rollable(series):
        horizons = [h for h in horizons if h == 1]
    hmax = max(horizons)
    origins = span.origins(hmax)
    if transform is not None and (transform.lag > 0 or transform.log is not None):
        if hmax > 1 and series.feature_names != series.target_names:
            horizons, hmax = [1], 1  # path_levels feeds outputs back in column order
            origins = span.origins(1)
        mseries = transforms.apply(transform, series)
        levels = path_levels(
            model, mseries, scalers, origins - transform.lag, hmax, transform, series
        )
    else:
        x = apply(scalers, series.feature_names, series.features).astype(np.float32)
        if feedback is None and hmax > 1:  # calendar inputs: known for the rows ahead
            paths = forecast_paths(model, x, origins, hmax)
        else:
            paths = model_paths(
                model, x, origins, hmax, feedback if feedback is not None else np.zeros(0)
            )
        levels = invert(scalers, series.target_names, paths.reshape(-1, paths.shape[-1]))
        levels = levels.reshape(paths.shape)
    n = span.end - span.start
    preds = {h: levels[hmax - h : hmax - h + n, h - 1] for h in horizons}
    return score_paths(levels, span, horizons), preds


# -- everything beside the model ---------------------------------------------------------


@dataclass(frozen=True)
class Baselines:
    """The baselines of one span, the statistical ones possibly still fitting elsewhere."""

    span: Span
    fitted_rows: int  # rows [0, fitted_rows) the statistical models were fitted on
    season: int  # 1: none
    season_from: str
    horizons: tuple[int, ...]
    statistical: Future[StatResult] | StatResult

    def result(self) -> StatResult:
        if isinstance(self.statistical, StatResult):
            return self.statistical
        try:
            return self.statistical.result()
        except Exception as exc:  # a crashed worker costs the baseline, not the model
            return StatResult(notes=[f"ARIMA/ETS failed: {type(exc).__name__}: {exc}"])


def start_baselines(
    series: Series,
    fitted_rows: int,
    start: int,
    season: int | None = None,
    statistical: bool = True,
    background: bool = True,
    horizons: Sequence[int] = HORIZONS,
) -> Baselines:
    """Choose the season and start the statistical fits (in another process by default)."""
    span = Span(series, start, series.rows)
    m, source = choose_season(series, fitted_rows, season)
    horizons = [h for h in horizons if h <= start] or [1]  # an origin needs a row before it
    hmax = max(horizons)
    stats: Future[StatResult] | StatResult
    if not statistical:
        stats = StatResult(notes=["ARIMA/ETS not fitted (--no-statistical-baselines)"])
    elif not statistical_available():
        stats = StatResult(
            notes=["ARIMA/ETS skipped: statsmodels is not installed (pip install 'seqcast[train]')"]
        )
    else:
        run = start_statistical if background else statistical_forecast
        stats = run(series.targets, fitted_rows, span.origins(hmax), hmax, m)
    return Baselines(span, fitted_rows, m, source, tuple(horizons), stats)


def forecast_table(
    baselines: Baselines,
    model: Forecaster,
    scalers: dict[str, Scaler],
    transform: TargetTransform | None = None,
) -> dict[str, Any]:
    """The metrics.json / manifest block: per horizon, the model and every baseline."""
    b, span = baselines, baselines.span
    series, hmax = span.series, max(baselines.horizons)
    ours, _ = model_scores(model, series, scalers, span, b.horizons, transform)
    origins = span.origins(hmax)
    paths = {"persistence": naive_paths(series.targets, origins, hmax, 1)}
    notes: list[str] = []
    if b.season > 1:
        paths["seasonal_naive"] = naive_paths(series.targets, origins, hmax, b.season)
    else:
        notes.append("seasonal naive: no season found (--season sets one)")
    stats = b.result()
    for name, seconds in stats.seconds.items():  # not in the table: same run, same figures
        log.info("%s %s: fitted and forecast in %.1f s", name, stats.labels[name], seconds)
    paths.update(stats.paths)
    notes += stats.notes
    if not rollable(series):
        notes.append("seqcast beyond 1 step: not every input is a target or a calendar input")
    theirs = {k: score_paths(p, span, b.horizons) for k, p in paths.items()}
    table: dict[str, Any] = {}
    for h in b.horizons:
        row = {"seqcast": ours[h]} if h in ours else {}
        row.update({k: v[h] for k, v in theirs.items()})
        table[str(h)] = row
    return {
        "horizons": table,
        "rows": {"first": span.start, "count": span.end - span.start},
        "baselines_fitted_on": b.fitted_rows,
        "season": b.season,
        "season_from": b.season_from,
        "statistical": stats.labels,
        "notes": notes,
    }
