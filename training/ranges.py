"""Out-of-range checks: where the training rows lay, and test values far outside it.

A value is far out when it lies beyond [min - k std, max + k std] of its column's training
rows (the rows the final model was fitted on). Training warns of far-out test values (a
trending series whose test span leaves the training range fails quietly otherwise); the
manifest keeps the range so the service can count inputs far out (service/ranges.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from training.data import Series


@dataclass(frozen=True)
class FarOut:
    """One column's test values beyond the training range by more than k std."""

    column: str
    count: int  # test values far out
    rows: int  # test values in all
    worst: float  # the largest distance beyond the range, in training std


def input_range(series: Series, fitted_rows: int, k: float) -> dict[str, Any]:
    """The manifest's `input_range` block: each client input and target's training range."""
    columns = {}
    for name, values in _columns(series).items():
        part = values[:fitted_rows]
        columns[name] = {
            "min": float(part.min()),
            "max": float(part.max()),
            "std": float(part.std()),
        }
    return {"k": k, "columns": columns}


def far_out(series: Series, fitted_rows: int, test_start: int, k: float) -> list[FarOut]:
    """Columns whose test values [test_start, rows) lie more than k std outside the range."""
    out = []
    for name, values in _columns(series).items():
        train, test = values[:fitted_rows], values[test_start:]
        std = float(train.std()) or 1.0
        below = (train.min() - test) / std
        above = (test - train.max()) / std
        beyond = np.maximum(below, above)  # std beyond the nearer edge (negative: inside)
        count = int((beyond > k).sum())
        if count:
            out.append(FarOut(name, count, int(test.shape[0]), float(beyond.max())))
    return out


def _columns(series: Series) -> dict[str, np.ndarray]:
    """Inputs the client sends and the targets, by name (calendar inputs are not data)."""
    derived = set(series.time.calendar_columns) if series.time is not None else set()
    # Names without a column (a run the manifest schema then refuses) are left out here.
    features = zip(series.feature_names, series.features.T, strict=False)
    columns = {n: v for n, v in features if n not in derived}
    for n, v in zip(series.target_names, series.targets.T, strict=False):
        columns.setdefault(n, v)
    return columns
