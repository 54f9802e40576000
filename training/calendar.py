"""Dated rows: the time grid (frequency, time zone, gaps) and calendar features.

A time column of ISO 8601 stamps places every row on a grid: the first stamp plus whole
steps of a frequency (training.manifest.TimeSpec), inferred from the stamps or given.
Rows missing from the grid are inserted and filled like empty cells (--fill), and what
was filled is reported. Calendar features (month, day of week, hour, ...) are sin/cos
pairs of the stamp's phase in its cycle, in the stamps' local time; the service computes
the same (service/calendar.py, tested equal) for observed and future steps.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from training.manifest import FREQ_PATTERN, TimeSpec, zone_of

# An inferred frequency is refused (give --freq) when the grid it makes would be mostly
# gaps: more than this many grid rows per row read.
MAX_GRID_RATIO = 4


class TimeError(ValueError):
    """Stamps that make no grid; the message is one line for the user."""


def localize(
    stamps: Sequence[datetime], tz: str | None, local: bool = False
) -> tuple[list[datetime], str | None]:
    """Stamps in the model's zone, and that zone's name (None: naive stamps).

    With `tz`, naive stamps are read as local time there and aware ones converted to it.
    Without it, aware stamps sharing one UTC offset take it as their zone; with several
    offsets they are converted to UTC, unless local time matters (`local`: calendar
    features), which needs the zone named.
    """
    aware = {s.tzinfo is not None for s in stamps}
    if len(aware) > 1:
        raise TimeError("the time column mixes stamps with and without a UTC offset")
    if tz is not None:
        zone = zone_of(tz)
        if aware == {True}:
            return [s.astimezone(zone) for s in stamps], tz
        return [s.replace(tzinfo=zone) for s in stamps], tz
    if aware != {True}:
        return list(stamps), None
    offsets = sorted({s.utcoffset() or timedelta(0) for s in stamps})
    if len(offsets) > 1 and not local:
        offsets = [timedelta(0)]
    if len(offsets) > 1:
        shown = ", ".join(_offset_text(o) for o in offsets[:4])
        raise TimeError(
            f"the time column has several UTC offsets ({shown}): name the time zone with "
            "--tz (e.g. --tz Europe/Berlin)"
        )
    name = _offset_text(offsets[0])
    zone = zone_of(name)
    return [s.astimezone(zone) for s in stamps], name


def infer_freq(stamps: Sequence[datetime]) -> str:
    """The grid's step: months when every stamp is on the 1st (or the last) of its month
    at one time of day, days when at one time of day, else the greatest common step."""
    if len(stamps) < 2:
        raise TimeError("one dated row has no frequency: give --freq")
    walls = [s.replace(tzinfo=None) for s in stamps]
    same_time = len({w.time() for w in walls}) == 1
    if same_time and all(w.day == 1 for w in walls):
        return f"{_gcd([_months(a, b) for a, b in itertools.pairwise(walls)])}MS"
    if same_time and all(w.day == pd.Timestamp(w).days_in_month for w in walls):
        return f"{_gcd([_months(a, b) for a, b in itertools.pairwise(walls)])}ME"
    if same_time:
        return f"{_gcd([(b - a).days for a, b in itertools.pairwise(walls)])}D"
    # Aware stamps subtract as instants only in UTC (one zone's subtract as wall times).
    instants = [s if s.tzinfo is None else s.astimezone(UTC) for s in stamps]
    seconds = _gcd([round((b - a).total_seconds()) for a, b in itertools.pairwise(instants)])
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}min"
    return f"{seconds}s"


def grid(
    column: str,
    stamps: Sequence[datetime],
    freq: str | None,
    tz: str | None,
    calendar: Sequence[str] = (),
) -> tuple[TimeSpec, np.ndarray]:
    """The time block and each row's position on its grid (increasing, from 0)."""
    local, zone = localize(stamps, tz, local=bool(calendar))
    inferred = freq is None
    step = infer_freq(local) if freq is None else freq
    try:
        spec = TimeSpec(
            column=column,
            freq=step,
            anchor=local[0].isoformat(),
            tz=zone,
            calendar=list(calendar),  # type: ignore[arg-type]
        )
    except ValueError as exc:
        reason = str(exc).splitlines()[-1].strip() if "validation error" in str(exc) else exc
        raise TimeError(f"--freq {step}: {reason}") from None
    positions = np.empty(len(local), dtype=np.int64)
    for r, s in enumerate(local):
        k = spec.index(s)
        if k is None:
            raise TimeError(
                f"time column {column!r} has {s.isoformat()} (row {r + 1}), which is not on "
                f"the {step} grid from {local[0].isoformat()}"
            )
        positions[r] = k
    if inferred and positions[-1] + 1 > MAX_GRID_RATIO * len(local):
        raise TimeError(
            f"the inferred frequency {step} leaves {positions[-1] + 1 - len(local)} of "
            f"{positions[-1] + 1} rows missing: give --freq"
        )
    return spec, positions


# The calendar cycle a frequency's rows go through, tried by the search when --calendar is
# not given: (unit, steps per row) -> feature. Other frequencies (yearly, every 2 days, every
# 15 minutes, ...) have none.
DEFAULT_CALENDAR: dict[tuple[str, int], str] = {
    ("MS", 1): "month",
    ("ME", 1): "month",
    ("MS", 3): "quarter",
    ("ME", 3): "quarter",
    ("D", 1): "dayofweek",
    ("h", 1): "hour",
}


def default_calendar(freq: str) -> str | None:
    """The calendar feature whose cycle rows of `freq` go through (month for monthly rows,
    quarter for quarterly, day of week for daily, hour for hourly), else None."""
    found = re.match(FREQ_PATTERN, freq)
    if found is None:
        return None
    return DEFAULT_CALENDAR.get((found.group(2), int(found.group(1))))


def calendar_features(stamps: Sequence[datetime], names: Sequence[str]) -> np.ndarray:
    """(N, 2 * len(names)) float64: sin and cos of each feature's phase, in local time."""
    walls = pd.DatetimeIndex([s.replace(tzinfo=None) for s in stamps])
    out = np.empty((len(walls), 2 * len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        phase = 2.0 * math.pi * _phase(walls, name)
        out[:, 2 * j] = np.sin(phase)
        out[:, 2 * j + 1] = np.cos(phase)
    return out


def _phase(walls: pd.DatetimeIndex, name: str) -> np.ndarray:
    """Where each stamp lies in the feature's cycle, in [0, 1)."""
    if name == "month":
        return np.asarray((walls.month - 1) / 12.0)
    if name == "quarter":
        return np.asarray((walls.quarter - 1) / 4.0)
    if name == "dayofweek":
        return np.asarray(walls.day_of_week / 7.0)
    if name == "dayofmonth":
        return np.asarray((walls.day - 1) / walls.days_in_month)
    if name == "dayofyear":
        return np.asarray((walls.day_of_year - 1) / (365 + walls.is_leap_year.astype(int)))
    if name == "hour":
        return np.asarray((walls.hour + walls.minute / 60.0 + walls.second / 3600.0) / 24.0)
    raise TimeError(f"unknown calendar feature {name!r}")


def _months(a: datetime, b: datetime) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


def _gcd(steps: list[int]) -> int:
    g = math.gcd(*steps)
    if g <= 0:
        raise TimeError("the time column's stamps do not increase: no frequency")
    return g


def _offset_text(offset: timedelta) -> str:
    minutes = round(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"
