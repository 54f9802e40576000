"""ARIMA/SARIMA and ETS baselines through statsmodels (the `train` extra), imported lazily.

Each is fitted on the rows before the scored span only, its order chosen by AIC over a
small table; its parameters are then fixed and every origin filters the data up to it and
forecasts. No torch here: `start` runs the fits in a separate process while the
forecaster trains, so on two cores the baselines cost little wall time.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import multiprocessing
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Orders tried. d (0 or 1) comes from a unit-root test; the seasonal orders are tried only
# with a season, around the best non-seasonal (p, q).
ARIMA_ORDERS: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (2, 2))
SEASONAL_ORDERS: tuple[tuple[int, int, int], ...] = ((1, 0, 0), (0, 1, 1), (1, 0, 1))
ETS_FORMS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (True, True))
MAX_SEASON = 52  # longer seasons make the state space too large to fit quickly


def available() -> bool:
    return importlib.util.find_spec("statsmodels") is not None


def _quiet(fn: Callable[[], Any]) -> Any:
    """Run a statsmodels call with its warnings silenced; None when it fails."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return fn()
        except Exception as exc:  # a failed fit skips that order (LinAlgError, ValueError...)
            log.info("statistical fit failed: %s", exc)
            return None


def _differences(y: np.ndarray) -> int:
    """d for ARIMA: 1 when the augmented Dickey-Fuller test cannot reject a unit root."""
    from statsmodels.tsa.stattools import adfuller  # type: ignore[import-untyped]

    result = _quiet(lambda: adfuller(y, autolag="AIC"))
    return 1 if result is None or result[1] > 0.05 else 0


def _seasonal(y: np.ndarray, season: int) -> bool:
    return 1 < season <= MAX_SEASON and y.shape[0] >= 3 * season


def fit_arima(y: np.ndarray, season: int) -> tuple[Any, str] | None:
    """The (S)ARIMA of lowest AIC over the order table, fitted on y (N,)."""
    from statsmodels.tsa.arima.model import ARIMA  # type: ignore[import-untyped]

    d = _differences(y)
    best: tuple[float, Any, str] | None = None

    def consider(order: tuple[int, int, int], seasonal: tuple[int, int, int, int]) -> None:
        nonlocal best
        # A constant only without differencing: differencing would remove it.
        trend = "c" if order[1] == 0 and seasonal[1] == 0 else "n"
        res = _quiet(lambda: ARIMA(y, order=order, seasonal_order=seasonal, trend=trend).fit())
        if res is None or not math.isfinite(res.aic):
            return
        label = f"ARIMA({order[0]},{order[1]},{order[2]})"
        if seasonal[3]:
            label += f"({seasonal[0]},{seasonal[1]},{seasonal[2]})[{seasonal[3]}]"
        if best is None or res.aic < best[0]:
            best = (float(res.aic), res, label)

    for p, q in ARIMA_ORDERS:
        consider((p, d, q), (0, 0, 0, 0))
    if _seasonal(y, season):
        p, q = (1, 1)
        if best is not None:
            order = best[1].model.order
            p, q = int(order[0]), int(order[2])
        for sp, sd, sq in SEASONAL_ORDERS:
            consider((p, d, q), (sp, sd, sq, season))
    return None if best is None else (best[1], best[2])


def fit_ets(y: np.ndarray, season: int) -> tuple[Any, str] | None:
    """The linear ETS (additive errors) of lowest AIC over trend, damping and season."""
    from statsmodels.tsa.statespace.exponential_smoothing import ExponentialSmoothing  # type: ignore[import-untyped]

    seasons: list[int | None] = [None, season] if _seasonal(y, season) else [None]
    best: tuple[float, Any, str] | None = None
    for trend, damped in ETS_FORMS:
        for s in seasons:

            def one(trend: bool = trend, damped: bool = damped, s: int | None = s) -> Any:
                model = ExponentialSmoothing(y, trend=trend, damped_trend=damped, seasonal=s)
                return model.fit(disp=False)

            res = _quiet(one)
            if res is None or not math.isfinite(res.aic):
                continue
            form = "Ad" if damped else "A" if trend else "N"
            label = f"ETS(A,{form},{'A' if s else 'N'})" + (f"[{s}]" if s else "")
            if best is None or res.aic < best[0]:
                best = (float(res.aic), res, label)
    return None if best is None else (best[1], best[2])


FITS: dict[str, Callable[[np.ndarray, int], tuple[Any, str] | None]] = {
    "arima": fit_arima,
    "ets": fit_ets,
}


def paths_of(res: Any, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray | None:
    """(n_origins, horizon) forecasts of a fitted model with its parameters fixed, each origin
    knowing rows [0, origin] of y (N,) only."""
    known = _quiet(lambda: res.apply(y[: int(origins.max()) + 1]))
    if known is None:
        return None
    out = np.empty((origins.shape[0], horizon))
    for i, o in enumerate(origins):

        def one(o: int = int(o)) -> Any:
            return known.get_prediction(start=o + 1, end=o + horizon, dynamic=True)

        pred = _quiet(one)
        if pred is None:
            return None
        out[i] = np.asarray(pred.predicted_mean)[:horizon]
    return out if np.all(np.isfinite(out)) else None


@dataclass
class StatResult:
    """Forecast paths (n_origins, horizon, O) per model, their orders, and what went wrong."""

    paths: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def forecast(
    y: np.ndarray, fitted_rows: int, origins: np.ndarray, horizon: int, season: int
) -> StatResult:
    """Fit every model on y[:fitted_rows] (N, O), one column at a time, and forecast."""
    out = StatResult()
    if not available():
        out.notes.append(
            "ARIMA/ETS skipped: statsmodels is not installed (pip install 'seqcast[train]')"
        )
        return out
    for name, fit_one in FITS.items():
        t0 = time.perf_counter()
        columns, labels = [], []
        for j in range(y.shape[1]):
            found = fit_one(y[:fitted_rows, j], season)
            p = None if found is None else paths_of(found[0], y[:, j], origins, horizon)
            if found is None or p is None:
                break
            columns.append(p)
            labels.append(found[1])
        if len(columns) < y.shape[1]:
            out.notes.append(f"{name}: no order could be fitted")
            continue
        out.paths[name] = np.stack(columns, axis=-1)
        out.labels[name] = ", ".join(labels)
        out.seconds[name] = time.perf_counter() - t0
    return out


def start(
    y: np.ndarray, fitted_rows: int, origins: np.ndarray, horizon: int, season: int
) -> Future[StatResult]:
    """`forecast` in a separate process (spawned: no torch state is inherited)."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    future = pool.submit(forecast, y, fitted_rows, origins, horizon, season)
    pool.shutdown(wait=False)  # the worker exits once the one job is done
    return future
