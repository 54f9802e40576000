"""Target transforms: a log and/or differences, chosen from the training rows, inverted in levels.

The model learns and predicts in transformed units; every figure is reported in levels (the
targets' original units), and the service applies the same transform on both sides
(service/transforms.py), keeping the last `lag` observed values in the state it returns.

    z = log(y) | log1p(y) | y          (the log part)
    d[t] = z[t] - z[t - lag]           (the difference part; lag 1 or the season)

A series of N rows gives N - lag transformed rows: transformed row i is original row i + lag.
Target columns that are also inputs are transformed as inputs too; other inputs are not.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace

import numpy as np

from training.data import DataError, Series
from training.manifest import TargetTransform

log = logging.getLogger(__name__)

# Auto choice: a log when a positive series spans at least this ratio of max to min and its
# changes grow with its level (growth that compounds: the log's changes keep a steadier
# spread), differences when KPSS rejects a stationary level (a unit root or a trend: a
# recurrent net extrapolates neither). ADF's p-value is recorded beside it.
LOG_RATIO = 4.0
KPSS_ALPHA = 0.05  # KPSS rejects level stationarity below this p-value
# Autocorrelation of the first differences at the season (above that at lag 1) that calls
# for seasonal differences.
SEASONAL_ACF = 0.3
MIN_TEST_ROWS = 16  # fewer training rows: no tests, no transform


def parse(kind: str, season: int | None) -> TargetTransform:
    """The manifest block of a transform named as on the command line (not "auto")."""
    log_part = None
    rest = kind
    for name in ("log1p", "log"):
        if kind == name or kind.startswith(name + "-"):
            log_part, rest = name, kind[len(name) :].lstrip("-")
            break
    if rest in ("", "none"):
        lag = 0
    elif rest == "diff":
        lag = 1
    elif rest == "seasonal-diff":
        if season is None:
            raise DataError(f"transform {kind} needs --season")
        lag = season
    else:
        raise DataError(f"unknown transform {kind!r}")
    return TargetTransform(log=log_part, lag=lag, season=season)  # type: ignore[arg-type]


def choose(train_targets: np.ndarray, season: int | None) -> TargetTransform:
    """The transform the training rows (n, O) call for; the reason is recorded with it."""
    n = train_targets.shape[0]
    if n < MIN_TEST_ROWS:
        return TargetTransform(season=season, chosen="auto", reason=f"only {n} training rows")
    reasons = []
    log_part = None
    low, high = float(train_targets.min()), float(train_targets.max())
    if low > 0 and high / low >= LOG_RATIO:
        drift = _spread_drift(train_targets)
        log_drift = _spread_drift(np.log(train_targets))
        if log_drift < drift:
            log_part = "log"
        reasons.append(
            f"positive, max/min {high / low:.3g}; spread of changes drifts {drift:.2f} "
            f"(log: {log_drift:.2f}): {'log' if log_part else 'no log'}"
        )
    z = np.log(train_targets) if log_part else train_targets
    kpss_p, adf_p = _unit_root_tests(z)
    wanders = kpss_p < KPSS_ALPHA
    verdict = "not stationary" if wanders else "stationary"
    reasons.append(f"KPSS p {kpss_p:.3g}, ADF p {adf_p:.3g}: {verdict}")
    lag = 0
    if wanders:
        lag = 1
        if season is not None and n > 3 * season:
            changes = np.diff(z, axis=0)
            acf, acf1 = _autocorrelation(changes, season), _autocorrelation(changes, 1)
            # Persistent changes (inflation) correlate at every lag; a season stands out.
            if acf > SEASONAL_ACF and acf > acf1:
                lag = season
            reasons.append(f"ACF of the differences at {season} {acf:.2f}, at 1 {acf1:.2f}")
    return TargetTransform(
        log=log_part,  # type: ignore[arg-type]
        lag=lag,
        season=season,
        chosen="auto",
        reason="; ".join(reasons),
    )


def resolve(kind: str, season: int | None, train_targets: np.ndarray) -> TargetTransform:
    """The config's transform: chosen from the training rows for "auto", else as named."""
    return choose(train_targets, season) if kind == "auto" else parse(kind, season)


def check(transform: TargetTransform, series: Series) -> None:
    """Refuse a transform the series cannot take (DataError naming the column and row)."""
    if transform.lag > 0:
        missing = [t for t in series.target_names if t not in series.feature_names]
        if missing:
            raise DataError(
                f"transform {transform.kind} differences the targets, so they must be inputs "
                f"too: add {', '.join(map(repr, missing))} to --features"
            )
    if transform.log is not None:
        columns = _transformed_columns(series)
        for name, values in columns.items():
            bad = np.flatnonzero(values <= 0 if transform.log == "log" else values < 0)
            if bad.size:
                rule = "> 0" if transform.log == "log" else ">= 0"
                raise DataError(
                    f"transform {transform.kind} needs column {name!r} {rule}; row {bad[0] + 1} "
                    f"has {float(values[bad[0]])!r}"
                )
    if series.rows <= transform.lag + 2:
        raise DataError(f"{series.name} has {series.rows} rows: too few for lag {transform.lag}")


def apply(transform: TargetTransform, series: Series) -> Series:
    """The series in model units: N - lag rows, transformed target (and same-named) columns."""
    lag = transform.lag
    features = series.features.copy()
    targets = series.targets.copy()
    for j, name in enumerate(series.feature_names):
        if name in series.target_names:
            features[:, j] = _forward(transform, features[:, j])
    for j in range(targets.shape[1]):
        targets[:, j] = _forward(transform, targets[:, j])
    return replace(
        series,
        features=features[lag:],
        targets=targets[lag:],
        clean_targets=None if series.clean_targets is None else series.clean_targets[lag:],
        times=None if series.times is None else series.times[lag:],
    )


def _forward(transform: TargetTransform, column: np.ndarray) -> np.ndarray:
    z = log_of(transform, column)
    if transform.lag == 0:
        return z
    out = np.full_like(z, np.nan)
    out[transform.lag :] = z[transform.lag :] - z[: -transform.lag]
    return out


def log_of(transform: TargetTransform, values: np.ndarray) -> np.ndarray:
    if transform.log == "log":
        return np.asarray(np.log(values))
    if transform.log == "log1p":
        return np.asarray(np.log1p(values))
    return values


def exp_of(transform: TargetTransform, z: np.ndarray) -> np.ndarray:
    if transform.log == "log":
        return np.asarray(np.exp(z))
    if transform.log == "log1p":
        return np.asarray(np.maximum(np.expm1(z), 0.0))  # a count is never below zero
    return z


def to_levels(
    transform: TargetTransform, predicted: np.ndarray, levels: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """One-step predictions (k, O) in model units of original rows `rows`, in levels.

    `levels` (N, O) are the original targets; row r's prediction adds what it differences
    from, z[r - lag], which is observed when the prediction is made.
    """
    if transform.lag == 0:
        return exp_of(transform, predicted)
    z = log_of(transform, levels)
    return exp_of(transform, z[rows - transform.lag] + predicted)


def paths_to_levels(
    transform: TargetTransform, predicted: np.ndarray, levels: np.ndarray, origins: np.ndarray
) -> np.ndarray:
    """Multi-step forecasts (k, H, O) in model units, made after original rows `origins`
    (the last row observed), in levels: each step adds to the observed or forecast z lag
    steps before it."""
    lag = transform.lag
    if lag == 0:
        return exp_of(transform, predicted)
    z = log_of(transform, levels)
    horizon = predicted.shape[1]
    # Known z from lag rows before the first forecast step: origins - lag + 1 .. origins.
    history = z[origins[:, None] - lag + 1 + np.arange(lag)]  # (k, lag, O)
    path = np.concatenate([history, np.empty_like(predicted)], axis=1)  # (k, lag + H, O)
    for h in range(horizon):
        path[:, lag + h] = path[:, h] + predicted[:, h]
    return exp_of(transform, path[:, lag:])


def _transformed_columns(series: Series) -> dict[str, np.ndarray]:
    columns = {n: series.targets[:, j] for j, n in enumerate(series.target_names)}
    for j, n in enumerate(series.feature_names):
        if n in columns:
            columns[n] = series.features[:, j]
    return columns


def _unit_root_tests(z: np.ndarray) -> tuple[float, float]:
    """The smallest KPSS p-value and the largest ADF p-value over the columns."""
    from statsmodels.tools.sm_exceptions import (  # type: ignore[import-untyped]
        InterpolationWarning,
        SingularMatrixWarning,
    )
    from statsmodels.tsa.stattools import adfuller, kpss  # type: ignore[import-untyped]

    kpss_p, adf_p = 1.0, 0.0
    for j in range(z.shape[1]):
        column = z[:, j]
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            # KPSS reports p-values beyond its table as the table's edge, with a warning;
            # statsmodels 0.15 warns that the result type will change (index 1 stays the
            # p-value), and a noiseless column makes ADF's regression rank-deficient.
            warnings.simplefilter("ignore", InterpolationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", SingularMatrixWarning)
            warnings.simplefilter("ignore", RuntimeWarning)  # a noiseless column: log(0)
            kpss_p = min(kpss_p, float(kpss(column, regression="c", nlags="auto")[1]))
            adf_p = max(adf_p, float(adfuller(column, autolag="AIC")[1]))
    return kpss_p, adf_p


def _spread_drift(z: np.ndarray) -> float:
    """How much the spread of the changes differs between the two halves: |log(sd2 / sd1)|."""
    d = np.diff(z, axis=0)
    half = d.shape[0] // 2
    sd1, sd2 = d[:half].std(axis=0), d[half:].std(axis=0)
    ratio = np.where((sd1 > 0) & (sd2 > 0), sd2 / np.where(sd1 > 0, sd1, 1.0), 1.0)
    return float(np.mean(np.abs(np.log(ratio))))


def _autocorrelation(x: np.ndarray, lag: int) -> float:
    """Mean over columns of the sample autocorrelation at `lag`."""
    x = x - x.mean(axis=0)
    denom = (x**2).sum(axis=0)
    num = (x[lag:] * x[:-lag]).sum(axis=0)
    return float(np.mean(num / np.where(denom == 0, 1.0, denom)))
