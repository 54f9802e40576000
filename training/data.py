"""Series to learn from: the synthetic noisy sine or a validated CSV, and its chronological split.

Every check runs before anything is written, so bad input never leaves a half-made model:
a problem raises :class:`DataError` with a one-line reason naming the rows or columns.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Fill = Literal["ffill", "zero"]
FILLS: tuple[Fill, ...] = ("ffill", "zero")

SINE_NAME = "synthetic-sine"
SINE_STEP = 0.1  # t = 0, 0.1, ..., 99.9: 1000 points
SINE_END = 100.0
SINE_NOISE = 0.5  # Gaussian noise sigma


class DataError(ValueError):
    """Input data that cannot train a sound model; the message is one line for the user."""


@dataclass(frozen=True)
class Series:
    """A multivariate series: inputs (N, F), targets (N, O) and where they came from."""

    name: str
    sha256: str  # of the bytes the series was read from (or rendered to, when synthetic)
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    features: np.ndarray  # (N, F) float64
    targets: np.ndarray  # (N, O) float64
    clean_targets: np.ndarray | None = None  # (N, O) noiseless truth, synthetic series only
    noise_seed: int | None = None  # synthetic series only

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True)
class Split:
    """Chronological boundaries: train [0, train_end), val [train_end, val_end), test the rest."""

    train_end: int
    val_end: int
    rows: int

    @property
    def n_test(self) -> int:
        return self.rows - self.val_end


def split_series(rows: int, val_fraction: float, test_fraction: float) -> Split:
    """Test is the last share of the series; validation the last share of what precedes it."""
    n_test = round(rows * test_fraction)
    n_val = round((rows - n_test) * val_fraction)
    return Split(train_end=rows - n_test - n_val, val_end=rows - n_test, rows=rows)


def min_rows(window: int, val_fraction: float, test_fraction: float) -> int:
    """Fewest rows whose split leaves a training part of window + 1 and non-empty val/test."""
    rows = window + 3
    while True:
        s = split_series(rows, val_fraction, test_fraction)
        if s.train_end >= window + 1 and s.val_end > s.train_end and s.n_test >= 1:
            return rows
        rows += 1


def check_length(series: Series, window: int, val_fraction: float, test_fraction: float) -> None:
    need = min_rows(window, val_fraction, test_fraction)
    if series.rows < need:
        raise DataError(
            f"{series.name} has {series.rows} rows; window {window} with validation "
            f"{val_fraction:g} and test {test_fraction:g} needs at least {need}"
        )


def synthetic_sine(seed: int = 42) -> Series:
    """sin(t) + N(0, 0.5^2), t = 0 .. 99.9 step 0.1; legacy RandomState keeps old draws."""
    t = np.arange(0.0, SINE_END, SINE_STEP)
    clean = np.sin(t)
    noisy = clean + np.random.RandomState(seed).normal(scale=SINE_NOISE, size=t.shape[0])
    buf = io.StringIO()
    buf.write("t,value\n")
    for ti, vi in zip(t, noisy, strict=True):
        buf.write(f"{ti!r},{vi!r}\n")
    digest = hashlib.sha256(buf.getvalue().encode()).hexdigest()
    return Series(
        name=SINE_NAME,
        sha256=digest,
        feature_names=("value",),
        target_names=("value",),
        features=noisy[:, None],
        targets=noisy[:, None].copy(),
        clean_targets=clean[:, None],
        noise_seed=seed,
    )


def load_csv(
    path: Path,
    features: Sequence[str],
    targets: Sequence[str],
    fill: Fill | None = None,
) -> Series:
    """Read the chosen columns of a CSV with a header row; every cell must be a finite number."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text") from exc
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError(f"{path} is empty: expected a header row naming the columns")
    header = [h.strip() for h in rows[0]]
    wanted = list(dict.fromkeys([*features, *targets]))
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(
            f"column(s) {', '.join(map(repr, missing))} not in the header of {path} "
            f"(it has {', '.join(map(repr, header))})"
        )
    index = {c: header.index(c) for c in wanted}
    body = rows[1:]
    while body and not body[-1]:  # trailing blank lines end the file, they are not rows
        body.pop()
    if len(header) == 1:  # a blank line in a one-column file is an empty cell
        body = [row or [""] for row in body]
    values = np.empty((len(body), len(wanted)), dtype=np.float64)
    gaps: dict[str, list[int]] = {}
    for r, row in enumerate(body):
        line = r + 2  # the header is line 1
        if len(row) != len(header):
            raise DataError(
                f"line {line} of {path} has {len(row)} fields, the header has {len(header)}"
            )
        for j, col in enumerate(wanted):
            cell = row[index[col]].strip()
            values[r, j] = _parse_cell(cell, col, line, gaps)
    if gaps:
        values = _fill_gaps(values, wanted, gaps, fill)
    col_of = {c: j for j, c in enumerate(wanted)}
    return Series(
        name=path.name,
        sha256=hashlib.sha256(raw).hexdigest(),
        feature_names=tuple(features),
        target_names=tuple(targets),
        features=values[:, [col_of[c] for c in features]],
        targets=values[:, [col_of[c] for c in targets]],
    )


def _parse_cell(cell: str, col: str, line: int, gaps: dict[str, list[int]]) -> float:
    if cell == "" or cell.lower() in ("nan", "na", "null", "none"):
        gaps.setdefault(col, []).append(line)
        return math.nan
    try:
        v = float(cell)
    except ValueError:
        raise DataError(f"column {col!r} has non-numeric value {cell!r} on line {line}") from None
    if not math.isfinite(v):
        raise DataError(f"column {col!r} has non-finite value {cell!r} on line {line}")
    return v


def _fill_gaps(
    values: np.ndarray, cols: list[str], gaps: dict[str, list[int]], fill: Fill | None
) -> np.ndarray:
    if fill is None:
        where = "; ".join(f"{c!r} on line(s) {_lines(ls)}" for c, ls in gaps.items())
        raise DataError(f"missing values in column {where} (or choose a fill: ffill, zero)")
    out = values.copy()
    for j, col in enumerate(cols):
        if col not in gaps:
            continue
        v = out[:, j]
        if fill == "zero":
            v[np.isnan(v)] = 0.0
            continue
        if math.isnan(v[0]):
            raise DataError(
                f"column {col!r} starts with a missing value (line 2): nothing to ffill"
            )
        for i in range(1, v.shape[0]):
            if math.isnan(v[i]):
                v[i] = v[i - 1]
    return out


def _lines(lines: list[int], shown: int = 5) -> str:
    head = ", ".join(map(str, lines[:shown]))
    return head if len(lines) <= shown else f"{head} and {len(lines) - shown} more"
