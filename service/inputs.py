"""Checking request inputs against a model and the limits: one validator for every way in.

Predict, session creation, observe and WebSocket frames all turn their values, state
and horizon into arrays here, so a limit or a model rule is checked in one place and
named the same way everywhere. Nothing here knows HTTP: a refusal is an InputError
naming the field at fault, which each protocol renders in its own shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np

from service.inference import SeriesInput
from service.repository import F32_MAX, LoadedModel


class InputError(ValueError):
    """An input the model or the limits refuse; `field` names it, `code` says how."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may ask for (the `max_*` settings)."""

    max_series: int
    max_values: int
    max_horizon: int
    # Recurrent steps in one request: values + horizon - 1, summed over its series.
    max_work: int = 2**63 - 1


class StateIn(Protocol):
    """A state as a client sends it back (the API's State body)."""

    @property
    def model(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def h(self) -> Sequence[Sequence[float]]: ...
    @property
    def c(self) -> Sequence[Sequence[float]] | None: ...
    @property
    def levels(self) -> object | None: ...
    @property
    def time(self) -> str | None: ...


class SeriesIn(Protocol):
    @property
    def values(self) -> Sequence[float] | Sequence[Sequence[float]]: ...
    @property
    def state(self) -> StateIn | None: ...
    @property
    def horizon(self) -> int: ...


def series_inputs(
    series: Sequence[SeriesIn], model: LoadedModel, limits: Limits
) -> list[SeriesInput]:
    """Every series of a predict request as arrays, checked against the model."""
    if len(series) > limits.max_series:
        raise InputError(
            "limit_exceeded",
            f"series has {len(series)} entries, over the limit "
            f"max_series_per_request={limits.max_series}",
            "series",
        )
    out = []
    work = 0
    for i, s in enumerate(series):
        try:
            values = values_array(s.values, model, limits, "values")
            check_horizon(s.horizon, model, limits, "horizon")
            h, c = state_arrays(s.state, model, "state")
            levels = None
            if model.transformed:
                check_domain(values, model, "values")
                levels = levels_array(s.state, model, "state")
            scale = scale_array(s.state, model, "state") if s.state is not None else None
            future = last = None
            # Not every protocol's series has a stamp (getattr): those send none.
            timestamp = getattr(s, "timestamp", None)
            if model.timed or timestamp is not None:
                from service.calendar import state_time, timed_values

                timed = timed_values(
                    model,
                    values,
                    s.horizon,
                    timestamp,
                    state_time(s.state, model, "state"),
                    "timestamp",
                    "state",
                )
                values, future, last = timed.values, timed.future, timed.last
        except InputError as exc:
            # Field names are built only for an answer that needs them (every message
            # begins with its field).
            where = f"series[{i}]."
            raise InputError(exc.code, where + exc.message, where + (exc.field or "")) from None
        out.append(
            SeriesInput(
                values=values,
                h=h,
                c=c,
                horizon=s.horizon,
                levels=levels,
                future=future,
                time=last,
                scale=scale,
            )
            if model.timed
            else SeriesInput(values=values, h=h, c=c, horizon=s.horizon, levels=levels, scale=scale)
        )
        work += values.shape[0] + s.horizon - 1
    if work > limits.max_work:
        raise InputError(
            "limit_exceeded",
            f"series ask for {work} steps of work (values + horizon - 1, summed over the "
            f"series), over the limit max_work_per_request={limits.max_work}",
            "series",
        )
    return out


def check_horizon(horizon: int, model: LoadedModel, limits: Limits, field: str) -> None:
    if horizon > limits.max_horizon:
        raise InputError(
            "limit_exceeded",
            f"{field} is {horizon}, over the limit max_horizon={limits.max_horizon}",
            field,
        )
    if horizon > 1 and not model.manifest.can_roll_out:
        raise InputError(
            "invalid_value",
            f"{field} must be 1 for model {model.name!r}: its targets "
            f"{model.manifest.targets} are not its features {model.manifest.client_features}, "
            "so it cannot roll forward on its own predictions",
            field,
        )


def values_array(
    values: Sequence[float] | Sequence[Sequence[float]] | np.ndarray,
    model: LoadedModel,
    limits: Limits,
    field: str,
) -> np.ndarray:
    """(time, features) float32 in original units, safe to scale for this model.

    `values` is what a JSON body gave (numbers or rows), or an array some protocol decoded
    (rows_array checks it)."""
    if isinstance(values, np.ndarray):
        return rows_array(values, model, limits, field)
    n_features = model.client_inputs
    if len(values) > limits.max_values:
        raise InputError(
            "limit_exceeded",
            f"{field} has {len(values)} values, over the limit "
            f"max_values_per_series={limits.max_values}",
            field,
        )
    rows = isinstance(values[0], list)
    if not rows and n_features != 1:
        raise InputError(
            "invalid_value",
            f"{field} must be rows of {n_features} numbers "
            f"({', '.join(model.manifest.client_features)})"
            f" for model {model.name!r}",
            field,
        )
    array = _float32(values)
    if not rows:
        array = array.reshape(-1, 1)
        # A short series of plain numbers is checked in Python, cheaper than numpy here.
        numbers = cast("Sequence[float]", values)
        if (
            len(numbers) <= 64
            and max(numbers) <= model.safe_abs
            and min(numbers) >= -model.safe_abs
        ):
            return array
    elif array.ndim != 2 or array.shape[1] != n_features:
        bad = _first_row_not_of_length(values, n_features)
        raise InputError(
            "invalid_value",
            f"{field}[{bad}] must have {n_features} number(s) "
            f"({', '.join(model.manifest.client_features)}) for model {model.name!r}",
            f"{field}[{bad}]",
        )
    return _scalable(array, model, field)


def rows_array(array: np.ndarray, model: LoadedModel, limits: Limits, field: str) -> np.ndarray:
    """An array of one series' values, decoded by a protocol (not yet checked): (time,
    features) float32 or float64 in original units. The same rules as values_array: the
    length limit, the feature count, finite numbers within float32, safe to scale."""
    n_features = model.client_inputs
    if array.ndim != 2 or array.shape[1] != n_features:
        raise InputError(
            "invalid_shape",
            f"{field} must be [time, {n_features}] ({', '.join(model.manifest.features)}) "
            f"for model {model.name!r}, got {list(array.shape)}",
            field,
        )
    if array.shape[0] > limits.max_values:
        raise InputError(
            "limit_exceeded",
            f"{field} has {array.shape[0]} values, over the limit "
            f"max_values_per_series={limits.max_values}",
            field,
        )
    if array.shape[0] == 0:
        raise InputError("invalid_value", f"{field} has no values; send at least one", field)
    wide, peak = _finite(array, field, F32_MAX)
    if model.scale_is_safe or peak <= model.safe_abs:
        return wide
    return _scalable(wide, model, field)


def finite_float32(array: np.ndarray, field: str, bound: float = np.inf) -> np.ndarray:
    """A decoded array as float32, refused unless every number is finite in float32 (what
    JSON bodies are held to) and, when given, within ±bound."""
    return _finite(array, field, min(bound, F32_MAX))[0]


def _as_float32(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.float32:
        return array
    with np.errstate(over="ignore"):  # beyond float32: inf, refused by the caller
        return array.astype(np.float32)


def _finite(array: np.ndarray, field: str, limit: float) -> tuple[np.ndarray, float]:
    """(the array as float32, its largest magnitude), or the refusal of its first number
    that is not finite in float32 or beyond ±limit. One reduction over the magnitudes,
    which carries a NaN or an infinity to the comparison (and warns of neither, where a
    sum would warn of inf - inf)."""
    wide = _as_float32(array)
    if wide.size == 0:
        return wide, 0.0
    peak = float(np.abs(wide).max())
    if peak <= limit:  # False for NaN (abs and max carry it) and inf
        return wide, peak
    where = [int(i) for i in np.argwhere(~(np.abs(wide) <= limit))[0]]
    index = "".join(f"[{i}]" for i in where)
    within = f" within ±{limit:g}" if limit < F32_MAX else ""
    raise InputError(
        "invalid_value",
        f"{field}{index}: {float(array[tuple(where)])!r} is not a finite float32 number{within}",
        f"{field}{index}",
    )


def state_arrays(
    state: StateIn | None, model: LoadedModel, field: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(h, c) as (num_layers, hidden) float32 arrays; refused when not this model's."""
    if state is None:
        return None, None
    if state.model != model.name or state.version != model.version:
        raise InputError(
            "state_mismatch",
            f"{field} belongs to model {shown(state.model)!r} version {state.version}, not to "
            f"model {model.name!r} version {model.version}",
            f"{field}.model" if state.model != model.name else f"{field}.version",
        )
    # What only some models' states carry is absent from the others' (as the schema says).
    if state.time is not None and not model.timed:
        raise InputError(
            "unknown_field",
            f"{field}.time must be absent: model {model.name!r} has no time column",
            f"{field}.time",
        )
    if state.levels is not None and not model.lag:
        raise InputError(
            "unknown_field",
            f"{field}.levels must be absent: model {model.name!r} does not difference its targets",
            f"{field}.levels",
        )
    layers, hidden = model.state_shape
    h = _state_matrix(state.h, layers, hidden, f"{field}.h")
    if model.manifest.is_lstm:
        if state.c is None:
            raise InputError(
                "missing_field", f"{field}.c is required: {model.name!r} is an LSTM", f"{field}.c"
            )
        return h, _state_matrix(state.c, layers, hidden, f"{field}.c")
    if state.c is not None:
        raise InputError(
            "unknown_field",
            f"{field}.c must be absent: {model.name!r} is {model.manifest.architecture.cell}, "
            "which has no cell state",
            f"{field}.c",
        )
    return h, None


def check_domain(values: np.ndarray, model: LoadedModel, field: str) -> None:
    """A log transform's target columns must be > 0 (log) or >= 0 (log1p)."""
    t = model.manifest.transform
    if t is None or t.log is None:
        return
    manifest = model.manifest
    cols = [j for j, f in enumerate(manifest.features) if f in manifest.targets]
    part = values[:, cols]
    bad = part <= 0 if t.log == "log" else part < 0
    if bad.any():
        row, col = np.argwhere(bad)[0]
        rule = "greater than 0" if t.log == "log" else "at least 0"
        where = f"{field}[{row}]" if values.shape[1] == 1 else f"{field}[{row}][{cols[col]}]"
        raise InputError(
            "invalid_value",
            f"{where} is {float(part[row, col])!r}: model {model.name!r} takes the {t.log} of "
            f"{manifest.features[cols[col]]!r}, which must be {rule}",
            where,
        )


def levels_array(state: StateIn | None, model: LoadedModel, field: str) -> np.ndarray | None:
    """The state's levels (k <= lag, targets) float32 for a model with a lag; None if fresh."""
    if state is None:
        return None
    # Not part of StateIn: protocols whose states cannot carry levels pass such states too.
    given = getattr(state, "levels", None)
    targets = model.manifest.targets
    if model.lag == 0:
        if given is not None:
            raise InputError(
                "unknown_field",
                f"{field}.levels must be absent: model {model.name!r} does not difference "
                "its targets",
                f"{field}.levels",
            )
        return None
    if given is None:
        raise InputError(
            "missing_field",
            f"{field}.levels is required: model {model.name!r} differences its targets at lag "
            f"{model.lag}, so its state carries the last {model.lag} observed value(s) of "
            f"{', '.join(targets)}; send the state back as an answer gave it",
            f"{field}.levels",
        )
    array = _float32(given)
    if array.ndim == 1 and len(targets) == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[1] != len(targets) or not 1 <= array.shape[0] <= model.lag:
        raise InputError(
            "invalid_shape",
            f"{field}.levels must be 1 to {model.lag} rows of {len(targets)} number(s) "
            f"({', '.join(targets)}) for model {model.name!r}",
            f"{field}.levels",
        )
    t = model.manifest.transform
    if t is not None and t.log is not None:
        bad = array <= 0 if t.log == "log" else array < 0
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise InputError(
                "invalid_value",
                f"{field}.levels[{row}] is out of the domain of the model's {t.log}",
                f"{field}.levels[{row}]",
            )
    return array


def scale_array(state: StateIn | None, model: LoadedModel, field: str) -> np.ndarray | None:
    """The state's interval scale (2, targets) float32 (service.transforms.ErrorScale) for
    a model with normalized-conformal intervals; None: start afresh (no state, or a state
    without one, as from before such intervals: the documented fallback)."""
    given = getattr(state, "scale", None)  # protocols whose states have none pass None
    if given is None:
        return None
    targets = model.manifest.targets
    if model.error_scale is None:
        raise InputError(
            "unknown_field",
            f"{field}.scale must be absent: model {model.name!r} has no normalized-conformal "
            "intervals",
            f"{field}.scale",
        )
    out = model.error_scale.fresh()
    for row, name in ((0, "mean_square"), (1, "last")):
        numbers = getattr(given, name)
        if numbers is None:
            continue
        if len(numbers) != len(targets):
            raise InputError(
                "invalid_shape",
                f"{field}.scale.{name} must be {len(targets)} number(s) ({', '.join(targets)}) "
                f"for model {model.name!r}, got {len(numbers)}",
                f"{field}.scale.{name}",
            )
        out[row] = numbers
    return out


MAX_INTERVALS = 8  # interval levels one request may ask for


def check_intervals(
    levels: Sequence[float] | None, horizon: int, model: LoadedModel, field: str
) -> None:
    """Requested interval levels: each in (0, 1), and a model calibrated that far ahead."""
    if not levels:
        return
    if len(levels) > MAX_INTERVALS:
        raise InputError(
            "limit_exceeded",
            f"{field} has {len(levels)} levels, over the limit of {MAX_INTERVALS}",
            field,
        )
    for k, p in enumerate(levels):
        if not 0.0 < p < 1.0:
            raise InputError(
                "invalid_value",
                f"{field}[{k}] is {p!r}: a level must lie in (0, 1)",
                f"{field}[{k}]",
            )
    calibrated = model.manifest.intervals
    if calibrated is None:
        raise InputError(
            "invalid_value",
            f"{field}: no intervals are calibrated for model {model.name!r} version "
            f"{model.version} (trained before they existed, or with too few validation rows)",
            field,
        )
    if horizon > len(calibrated.widths):
        raise InputError(
            "invalid_value",
            f"{field}: intervals are calibrated for model {model.name!r} for at most "
            f"{len(calibrated.widths)} step(s); horizon is {horizon}",
            field,
        )


def state_rows(
    h: np.ndarray | None,
    c: np.ndarray | None,
    model: LoadedModel,
    batch: int,
    h_bound: float,
    fields: tuple[str, str] = ("h", "c"),
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Decoded state arrays for `batch` series, (batch, num_layers, hidden) each, as
    state_arrays checks a JSON state: this model's shape, `c` exactly for an LSTM, finite
    float32, each number of h within ±h_bound (a tanh output)."""
    if h is None and c is None:
        return None, None
    h_field, c_field = fields
    if h is None:
        raise InputError(
            "missing_field", f"{h_field} is required with {c_field}: a state is both", h_field
        )
    layers, hidden = model.state_shape
    expected = (batch, layers, hidden)
    for array, field in ((h, h_field), (c, c_field)):
        if array is not None and array.shape != expected:
            raise InputError(
                "invalid_shape",
                f"{field} must be [batch, num_layers, hidden] = {list(expected)} for model "
                f"{model.name!r}, got {list(array.shape)}",
                field,
            )
    if model.manifest.is_lstm and c is None:
        raise InputError(
            "missing_field",
            f"{c_field} is required with {h_field}: {model.name!r} is an LSTM",
            c_field,
        )
    if not model.manifest.is_lstm and c is not None:
        raise InputError(
            "unknown_field",
            f"{c_field} must be absent: {model.name!r} is {model.manifest.architecture.cell}, "
            "which has no cell state",
            c_field,
        )
    h = finite_float32(h, h_field, h_bound)
    return h, None if c is None else finite_float32(c, c_field)


def shown(text: str, limit: int = 64) -> str:
    """Client input echoed in a message, cut to `limit` characters."""
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} characters)"


def _scalable(array: np.ndarray, model: LoadedModel, field: str) -> np.ndarray:
    """The values, or a refusal of one that leaves float32 once scaled into model units.

    Values within `safe_abs` scale in float32 like any others; larger ones that still
    fit come back as float64 (their float32 values, widened), which tells the
    inference core to scale them in float64.
    """
    if model.scale_is_safe or float(np.abs(array).max()) <= model.safe_abs:
        return array
    n = array.shape[1]  # the client's columns (a dated model computes its calendar ones)
    too_large = np.abs(array * model.x_mul64[:n] + model.x_add64[:n]) > F32_MAX  # no overflow
    if too_large.any():
        t, _ = np.argwhere(too_large)[0]
        raise InputError(
            "invalid_value",
            f"{field}[{t}]: value is too large for this model: it overflows float32 "
            f"(max {F32_MAX:.4g}) once scaled",
            f"{field}[{t}]",
        )
    return array.astype(np.float64)


def _state_matrix(
    matrix: Sequence[Sequence[float]], layers: int, hidden: int, field: str
) -> np.ndarray:
    array = _float32(matrix)
    if array.shape != (layers, hidden):
        shape = list(array.shape) if array.ndim == 2 else "ragged"
        raise InputError(
            "invalid_shape",
            f"{field} must be [num_layers][hidden] = [{layers}][{hidden}], got {shape}",
            field,
        )
    return array


def _float32(numbers: Any) -> np.ndarray:
    """float32 array of validated numbers (finite, within float32 range); 1-d empty if ragged."""
    try:
        return np.asarray(numbers, dtype=np.float32)
    except ValueError:
        # Ragged rows: the caller says which row is at fault.
        return np.empty((0,), dtype=np.float32)


def _first_row_not_of_length(rows: Any, length: int) -> int:
    # Error path only: the happy path never loops over rows in Python.
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != length:
            return i
    return 0
