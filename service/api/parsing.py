"""From a validated request body to arrays the inference core takes, per model.

Everything that depends on the model (feature count, state shape and owner) or on
the limits in the settings is checked here, naming the field at fault.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import ValidationError

from service.api.errors import ApiError, from_validation_errors
from service.api.schemas import PredictRequest, SeriesRequest, State
from service.inference import SeriesInput
from service.repository import LoadedModel
from service.settings import Settings

_VALIDATOR = PredictRequest.__pydantic_validator__


def parse_predict_request(body: bytes) -> PredictRequest:
    """Validate the raw JSON body (pydantic's Rust path) or raise a 422 naming the field."""
    if not body:
        raise ApiError(422, "invalid_json", "the request body is empty; send a JSON object")
    try:
        request: PredictRequest = _VALIDATOR.validate_json(body)
    except ValidationError as exc:
        raise from_validation_errors(exc.errors()) from None
    return request


def series_inputs(
    request: PredictRequest, model: LoadedModel, settings: Settings
) -> list[SeriesInput]:
    if len(request.series) > settings.max_series_per_request:
        raise ApiError(
            422,
            "limit_exceeded",
            f"series has {len(request.series)} entries, over the limit "
            f"max_series_per_request={settings.max_series_per_request}",
            "series",
        )
    return [series_input(s, model, settings, f"series[{i}]") for i, s in enumerate(request.series)]


def series_input(
    series: SeriesRequest, model: LoadedModel, settings: Settings, field: str
) -> SeriesInput:
    """One series' values, state and horizon as arrays, checked against the model."""
    values = values_array(series.values, model, settings, f"{field}.values")
    if series.horizon > settings.max_horizon:
        raise ApiError(
            422,
            "limit_exceeded",
            f"{field}.horizon is {series.horizon}, over the limit "
            f"max_horizon={settings.max_horizon}",
            f"{field}.horizon",
        )
    if series.horizon > 1 and not model.manifest.can_roll_out:
        raise ApiError(
            422,
            "invalid_value",
            f"{field}.horizon must be 1 for model {model.name!r}: its targets "
            f"{model.manifest.targets} are not its features {model.manifest.features}, "
            "so it cannot roll forward on its own predictions",
            f"{field}.horizon",
        )
    h, c = state_arrays(series.state, model, f"{field}.state")
    return SeriesInput(values=values, h=h, c=c, horizon=series.horizon)


def values_array(
    values: list[float] | list[list[float]], model: LoadedModel, settings: Settings, field: str
) -> np.ndarray:
    """(time, features) float32 in original units; 422 naming the field otherwise."""
    n_features = model.manifest.architecture.input_size
    if len(values) > settings.max_values_per_series:
        raise ApiError(
            422,
            "limit_exceeded",
            f"{field} has {len(values)} values, over the limit "
            f"max_values_per_series={settings.max_values_per_series}",
            field,
        )
    rows = isinstance(values[0], list)
    if not rows and n_features != 1:
        raise ApiError(
            422,
            "invalid_value",
            f"{field} must be rows of {n_features} numbers ({', '.join(model.manifest.features)})"
            f" for model {model.name!r}",
            field,
        )
    array = _float32(values)
    if not rows:
        array = array.reshape(-1, 1)
    elif array.ndim != 2 or array.shape[1] != n_features:
        bad = _first_row_not_of_length(values, n_features)
        raise ApiError(
            422,
            "invalid_value",
            f"{field}[{bad}] must have {n_features} number(s) "
            f"({', '.join(model.manifest.features)}) for model {model.name!r}",
            f"{field}[{bad}]",
        )
    return array


def state_arrays(
    state: State | None, model: LoadedModel, field: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(h, c) as (num_layers, hidden) float32 arrays; 422 when the state is not this model's."""
    if state is None:
        return None, None
    if state.model != model.name or state.version != model.version:
        raise ApiError(
            422,
            "state_mismatch",
            f"{field} belongs to model {state.model!r} version {state.version}, not to "
            f"model {model.name!r} version {model.version}",
            f"{field}.model" if state.model != model.name else f"{field}.version",
        )
    layers, hidden = model.state_shape
    h = _state_matrix(state.h, layers, hidden, f"{field}.h")
    if model.manifest.is_lstm:
        if state.c is None:
            raise ApiError(
                422,
                "missing_field",
                f"{field}.c is required: {model.name!r} is an LSTM",
                f"{field}.c",
            )
        c = _state_matrix(state.c, layers, hidden, f"{field}.c")
        return h, c
    if state.c is not None:
        raise ApiError(
            422,
            "unknown_field",
            f"{field}.c must be absent: {model.name!r} is {model.manifest.architecture.cell}, "
            "which has no cell state",
            f"{field}.c",
        )
    return h, None


def _state_matrix(matrix: list[list[float]], layers: int, hidden: int, field: str) -> np.ndarray:
    array = _float32(matrix)
    if array.shape != (layers, hidden):
        shape = list(array.shape) if array.ndim == 2 else "ragged"
        raise ApiError(
            422,
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
