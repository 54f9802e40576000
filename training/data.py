"""Series to learn from: the synthetic noisy sine or a validated CSV, and its chronological split.

Every check runs before anything is written, so bad input never leaves a half-made model:
a problem raises :class:`DataError` with a one-line reason naming the rows or columns.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np

from training.config import MAX_AUTO_WINDOW
from training.manifest import TimeSpec, calendar_columns

Fill = Literal["interpolate", "ffill", "zero"]
FILLS: tuple[Fill, ...] = ("interpolate", "ffill", "zero")

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
    time_name: str | None = None  # the CSV's time column, when one was named
    times: tuple[str, ...] | None = None  # its cells as written, increasing, one per row
    # Dated time columns: the grid (frequency, zone, calendar features); rows missing from
    # it were inserted and filled, and `filled` says what was filled.
    time: TimeSpec | None = None
    filled: dict[str, object] | None = None

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

    @property
    def n_val(self) -> int:
        return self.val_end - self.train_end


def split_series(
    rows: int,
    val_fraction: float,
    test_fraction: float,
    test_rows: int | None = None,
    val_rows: int | None = None,
) -> Split:
    """Test is the end of the series, validation the end of what precedes it.

    Each part is a row count when given, else a share: test of the series, validation of
    the rows before the test part. Check the result with check_split.
    """
    n_test = test_rows if test_rows is not None else round(rows * test_fraction)
    n_val = val_rows if val_rows is not None else round((rows - n_test) * val_fraction)
    return Split(train_end=rows - n_test - n_val, val_end=rows - n_test, rows=rows)


def auto_window(split: Split) -> int:
    """The default window: MAX_AUTO_WINDOW, or a third of the training rows when shorter."""
    return max(1, min(MAX_AUTO_WINDOW, split.train_end // 3))


def auto_burn_in(window: int) -> int:
    """Steps left out of the loss at the start of each subsequence: a tenth of the window."""
    return window // 10


def check_split(name: str, split: Split, window: int) -> None:
    """Refuse a split with an empty part, or whose training part cannot hold one window."""
    if split.n_test >= split.rows or split.val_end <= 0:
        raise DataError(
            f"{name} has {split.rows} rows: a test part of {split.n_test} leaves none to train on"
        )
    parts = f"train {split.train_end}, validation {split.n_val}, test {split.n_test}"
    if split.n_test < 1 or split.n_val < 1 or split.train_end < 2:
        raise DataError(
            f"{name} has {split.rows} rows, split as {parts}: test and validation need at "
            "least 1 row each and training at least 2"
        )
    if split.train_end < window + 1:
        raise DataError(
            f"{name} has {split.rows} rows, split as {parts}; window {window} needs at least "
            f"{window + 1} training rows: the largest window that fits is {split.train_end - 1}"
        )


def count_test_rows(series: Series, start: str) -> int:
    """Rows from the first whose time is at or after `start` to the end: the test part."""
    if series.times is None or series.time_name is None:
        raise DataError("--test-start needs a time column (--time-column)")
    keys = [_time_key(t) for t in series.times]
    first = _time_key(start.strip())
    if first is None or type(first) is not type(keys[0]):
        raise DataError(
            f"--test-start {start!r} is not a time like those of column {series.time_name!r} "
            f"(e.g. {series.times[0]!r})"
        )
    _check_comparable(series.time_name, keys[0], first, "--test-start")
    index = next((i for i, k in enumerate(keys) if k >= first), None)  # type: ignore[operator]
    if index is None:
        raise DataError(
            f"--test-start {start!r} is after the last row of {series.name} "
            f"({series.time_name} {series.times[-1]!r}): the test part would be empty"
        )
    if index == 0:
        raise DataError(
            f"--test-start {start!r} is at or before the first row of {series.name} "
            f"({series.time_name} {series.times[0]!r}): nothing would be left to train on"
        )
    return series.rows - index


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
    time_column: str | None = None,
    freq: str | None = None,
    tz: str | None = None,
    calendar: Sequence[str] = (),
) -> Series:
    """Read the chosen columns of a CSV with a header row; every cell must be a finite number.

    The time column, when named, holds numbers (e.g. years) or ISO 8601 dates and times
    (also YYYY-MM), strictly increasing; it places --test-start and is not an input.
    Dates place the rows on a grid of `freq` (inferred when None): rows missing from it
    are inserted and filled by `fill`; `calendar` features of the stamps become inputs
    after `features`.
    """
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
    named = wanted if time_column is None else [*wanted, time_column]
    missing = [c for c in dict.fromkeys(named) if c not in header]
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
    times = None
    spec = None
    filled: dict[str, object] | None = None
    if time_column is not None:
        cells = [row[header.index(time_column)].strip() for row in body]
        times = _read_times(path, time_column, cells)
        if freq is not None or tz is not None or calendar or _dated(times):
            spec, values, times, filled = _on_grid(
                time_column, times, values, wanted, gaps, fill, freq, tz, calendar
            )
    elif freq is not None or tz is not None or calendar:
        raise DataError("--freq, --tz and --calendar need a dated --time-column")
    if gaps and spec is None:
        values = _fill_gaps(values, wanted, gaps, fill)
    col_of = {c: j for j, c in enumerate(wanted)}
    feature_values = values[:, [col_of[c] for c in features]]
    feature_names = tuple(features)
    if spec is not None and spec.calendar:
        feature_values, feature_names = _with_calendar(spec, times or (), features, feature_values)
    return Series(
        name=path.name,
        sha256=hashlib.sha256(raw).hexdigest(),
        feature_names=feature_names,
        target_names=tuple(targets),
        features=feature_values,
        targets=values[:, [col_of[c] for c in targets]],
        time_name=time_column,
        times=times,
        time=spec,
        filled=filled,
    )


def _dated(times: tuple[str, ...]) -> bool:
    return isinstance(_time_key(times[0]), datetime)


def _on_grid(
    column: str,
    times: tuple[str, ...],
    values: np.ndarray,
    cols: list[str],
    gaps: dict[str, list[int]],
    fill: Fill | None,
    freq: str | None,
    tz: str | None,
    calendar: Sequence[str],
) -> tuple[TimeSpec, np.ndarray, tuple[str, ...], dict[str, object]]:
    """The rows on their time grid: missing rows inserted, every gap filled and counted."""
    from training.calendar import TimeError, grid

    if not _dated(times):
        raise DataError(f"--freq, --tz and --calendar need dates in time column {column!r}")
    stamps = [_time_key(t) for t in times]
    try:
        spec, positions = grid(column, stamps, freq, tz, calendar)  # type: ignore[arg-type]
    except (TimeError, ValueError) as exc:
        raise DataError(str(exc)) from None
    total = int(positions[-1]) + 1
    full = np.full((total, values.shape[1]), np.nan)
    full[positions] = values
    missing = np.setdiff1d(np.arange(total), positions)
    holes = np.isnan(full).sum(axis=0)  # (C,) cells to fill: empty ones and missing rows
    if missing.size or gaps:
        if fill is None:
            where = (
                [f"{missing.size} row(s) missing from the {spec.freq} grid"] if missing.size else []
            )
            if missing.size:
                where[0] += f" (the first at {spec.stamp(int(missing[0])).isoformat()})"
            where += [f"{c!r} empty on line(s) {_lines(ls)}" for c, ls in gaps.items()]
            raise DataError(f"{'; '.join(where)}: choose a fill (--fill {', '.join(FILLS)})")
        full = _fill_column_gaps(full, cols, fill)
    filled: dict[str, object] = {
        "freq": spec.freq,
        "fill": fill,
        "missing_rows": int(missing.size),
        "filled_cells": {c: int(n) for c, n in zip(cols, holes, strict=True) if n},
    }
    if missing.size:
        filled["first_missing"] = spec.stamp(int(missing[0])).isoformat()
    # The cells as written; rows inserted into the grid get their stamps in ISO 8601.
    cells = [""] * total
    for r, k in enumerate(positions.tolist()):
        cells[k] = times[r]
    for k in missing.tolist():
        cells[k] = spec.stamp(k).isoformat()
    new_times = tuple(cells)
    return spec, full, new_times, filled


def _with_calendar(
    spec: TimeSpec, times: tuple[str, ...], features: Sequence[str], values: np.ndarray
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The features with the calendar columns after them; a constant one is refused."""
    from training.calendar import calendar_features

    stamps = spec.stamps(0, len(times))
    extra = calendar_features(stamps, spec.calendar)
    names = calendar_columns(spec.calendar)
    for j, name in enumerate(spec.calendar):
        if np.ptp(extra[:, 2 * j]) < 1e-9 and np.ptp(extra[:, 2 * j + 1]) < 1e-9:
            raise DataError(
                f"calendar feature {name!r} is constant at frequency {spec.freq}: drop it"
            )
    clash = [n for n in names if n in features]
    if clash:
        raise DataError(f"calendar columns {clash} clash with --features of the same name")
    return np.concatenate([values, extra], axis=1), (*features, *names)


_YEAR_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def _time_key(text: str) -> float | datetime | None:
    """A number, or an ISO 8601 date/time (YYYY-MM as its first day); None if neither."""
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number if math.isfinite(number) else None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    month = _YEAR_MONTH.match(text)
    if month and 1 <= int(month[2]) <= 12:
        return datetime(int(month[1]), int(month[2]), 1)
    return None


def _check_comparable(column: str, a: float | datetime, b: float | datetime, what: str) -> None:
    aware = [t.tzinfo is not None for t in (a, b) if isinstance(t, datetime)]
    if len(aware) == 2 and aware[0] != aware[1]:
        raise DataError(f"{what} and column {column!r} mix times with and without a time zone")


def _read_times(path: Path, name: str, cells: list[str]) -> tuple[str, ...]:
    """The time column's cells, checked: parseable, one kind, strictly increasing."""
    column = f"time column {name!r}"
    previous: float | datetime | None = None
    for r, cell in enumerate(cells):
        line = r + 2
        key = _time_key(cell)
        if key is None:
            raise DataError(
                f"{column} of {path} has {cell!r} on line {line}: expected a number or an "
                "ISO 8601 date/time"
            )
        if previous is not None:
            if type(key) is not type(previous):
                raise DataError(f"{column} of {path} mixes numbers and dates (line {line})")
            _check_comparable(name, previous, key, f"line {line} of {path}")
            if not key > previous:  # type: ignore[operator]
                raise DataError(
                    f"{column} of {path} is not increasing: {cell!r} on line {line} follows "
                    f"{cells[r - 1]!r}"
                )
        previous = key
    if not cells:
        raise DataError(f"{path} has no rows")
    return tuple(cells)


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
        raise DataError(f"missing values in column {where} (or choose a fill: {', '.join(FILLS)})")
    return _fill_column_gaps(values, [c if c in gaps else "" for c in cols], fill)


def _fill_column_gaps(values: np.ndarray, cols: list[str], fill: Fill) -> np.ndarray:
    """NaN cells filled by `fill` in each named column (empty names are left alone)."""
    out = values.copy()
    for j, col in enumerate(cols):
        v = out[:, j]
        if not col or not np.isnan(v).any():
            continue
        if fill == "zero":
            v[np.isnan(v)] = 0.0
            continue
        if math.isnan(v[0]):
            raise DataError(
                f"column {col!r} starts with a missing value (line 2): nothing to {fill} from"
            )
        if fill == "interpolate":
            known = np.flatnonzero(~np.isnan(v))
            holes = np.flatnonzero(np.isnan(v))
            v[holes] = np.interp(holes, known, v[known])  # after the last: held
            continue
        for i in range(1, v.shape[0]):
            if math.isnan(v[i]):
                v[i] = v[i - 1]
    return out


def _lines(lines: list[int], shown: int = 5) -> str:
    head = ", ".join(map(str, lines[:shown]))
    return head if len(lines) <= shown else f"{head} and {len(lines) - shown} more"
