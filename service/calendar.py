"""Time stamps on the serving side: a model's time grid (manifest `time`) and its calendar inputs.

A dated model's state carries the grid position of the last value observed, so a stream
continues without restating its time. A request may give the stamp of its first value
instead (or as well: it must then follow the state's). From the position the service
computes the calendar inputs (sin/cos pairs, as training/calendar.py does, tested equal)
of every observed step and of every forecast step, and the forecast's stamps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from service.inputs import InputError
from service.repository import LoadedModel
from training.manifest import TimeSpec

_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True, slots=True)
class Timed:
    """A series' values with their calendar inputs, and where it lies on the grid."""

    values: np.ndarray  # (T, features): the client's columns, then the calendar's
    future: np.ndarray | None  # (horizon - 1, calendar columns): inputs of rolled-out steps
    last: int | None  # grid position of the last value; None: the series has no time


def calendar_features(stamps: Sequence[datetime], names: Sequence[str]) -> np.ndarray:
    """(N, 2 * len(names)) float64: sin and cos of each feature's phase, in local time."""
    n = len(stamps)
    out = np.empty((n, 2 * len(names)), dtype=np.float64)
    if not n:
        return out
    fields = np.array(
        [(s.year, s.month, s.day, s.hour, s.minute, s.second, s.weekday()) for s in stamps],
        dtype=np.int64,
    )  # (N, 7)
    year, month, day = fields[:, 0], fields[:, 1], fields[:, 2]
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    # Days before each month of a common year; leap years add one from March.
    before = np.array([0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334])
    in_month = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    doy = before[month - 1] + day + (leap & (month > 2))
    month_days = in_month[month - 1] + (leap & (month == 2))
    for j, name in enumerate(names):
        if name == "month":
            phase = (month - 1) / 12.0
        elif name == "quarter":
            phase = ((month - 1) // 3) / 4.0
        elif name == "dayofweek":
            phase = fields[:, 6] / 7.0
        elif name == "dayofmonth":
            phase = (day - 1) / month_days
        elif name == "dayofyear":
            phase = (doy - 1) / (365 + leap)
        elif name == "hour":
            phase = (fields[:, 3] + fields[:, 4] / 60.0 + fields[:, 5] / 3600.0) / 24.0
        else:  # the manifest's schema allows no other
            raise ValueError(f"unknown calendar feature {name!r}")
        out[:, 2 * j] = np.sin(_TWO_PI * phase)
        out[:, 2 * j + 1] = np.cos(_TWO_PI * phase)
    return out


def position(spec: TimeSpec, text: str, field: str) -> int:
    """The grid position of a stamp a client sent; InputError naming `field` if it has none."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            "invalid_value",
            f"{field} must be an ISO 8601 date or time, e.g. {spec.anchor!r}",
            field,
        ) from None
    try:
        k = spec.index(when)
    except ValueError as exc:
        raise InputError("invalid_value", f"{field}: {exc}", field) from None
    if k is None:
        raise InputError(
            "invalid_value",
            f"{field} {text!r} is not on the model's {spec.freq} grid (e.g. {spec.anchor!r})",
            field,
        )
    return k


def state_time(state: object | None, model: LoadedModel, field: str) -> int | None:
    """The grid position a state carries (its `time`), or None when it carries none."""
    given = getattr(state, "time", None) if state is not None else None
    if given is None:
        return None
    spec = model.manifest.time
    if spec is None:
        raise InputError(
            "unknown_field",
            f"{field}.time must be absent: model {model.name!r} has no time column",
            f"{field}.time",
        )
    return position(spec, given, f"{field}.time")


def timed_values(
    model: LoadedModel,
    values: np.ndarray,
    horizon: int,
    timestamp: str | None,
    last: int | None,
    field: str,
    state_field: str = "state",
) -> Timed:
    """The values with their calendar inputs, from the request's stamp or the state's time.

    `last` is the state's grid position (None: a fresh series or a state without time).
    """
    spec = model.manifest.time
    if spec is None:
        if timestamp is not None:
            raise InputError(
                "unknown_field",
                f"{field} must be absent: model {model.name!r} has no time column",
                field,
            )
        return Timed(values, None, None)
    if timestamp is not None:
        first = position(spec, timestamp, field)
        if last is not None and first != last + 1:
            expected = spec.stamp(last + 1).isoformat()
            raise InputError(
                "invalid_value",
                f"{field} is {timestamp!r}, but the state's last value was at "
                f"{spec.stamp(last).isoformat()}: the next value is at {expected}",
                field,
            )
    elif last is not None:
        first = last + 1
    elif spec.calendar:
        raise InputError(
            "missing_field",
            f"{field} is required: model {model.name!r} takes calendar inputs "
            f"({', '.join(spec.calendar)}) from time stamps; give the stamp of the first value, "
            f"or {state_field} with its time as an answer gave it",
            field,
        )
    else:
        return Timed(values, None, None)
    steps = values.shape[0]
    end = first + steps - 1  # the last value's position
    if not spec.calendar:
        return Timed(values, None, end)
    stamps = spec.stamps(first, steps + horizon - 1)
    calendar = calendar_features(stamps, spec.calendar)
    joined = np.concatenate([values, calendar[:steps].astype(values.dtype)], axis=1)
    return Timed(joined, calendar[steps:], end)


def forecast_timestamps(model: LoadedModel, time: int | None, horizon: int) -> list[str] | None:
    """The stamps of the forecast steps of a dated model whose series' time is known."""
    spec = model.manifest.time
    if spec is None or time is None:
        return None
    return [s.isoformat() for s in spec.stamps(time + 1, horizon)]
