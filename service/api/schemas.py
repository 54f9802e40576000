"""Request and response bodies of the REST API, as pydantic models.

Requests are validated from the raw JSON bytes in pydantic's Rust core (strict: a
string or a boolean is not a number, NaN and Infinity are refused). Responses are
built as plain dicts and encoded with orjson; the response models here document
them in OpenAPI.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

# Finite and within float32 range, checked in pydantic's Rust core: every number the
# service accepts converts to float32 without overflow. The limit is the largest double
# that rounds to float32's max, not that max itself: answers print float32s as the
# shortest text that reads back the same, which for the max is 3.4028235e+38, a little
# above F32_MAX as a double, and a state must be taken back as it was answered.
F32_LIMIT = math.nextafter(2.0**128 - 2.0**103, 0.0)  # 2**128 - 2**103 rounds to inf
Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-F32_LIMIT, le=F32_LIMIT)]


def _integral(value: Any) -> Any:
    # JSON does not tell 3 from 3.0 and neither does OpenAPI's "integer": take both.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer, written with or without ".0"; never a string or a boolean.
Integer = Annotated[int, BeforeValidator(_integral), Field(strict=True)]


def _values_kind(value: Any) -> str:
    return "rows" if isinstance(value, list) and value and isinstance(value[0], list) else "numbers"


Values = Annotated[
    Annotated[list[Number], Tag("numbers")] | Annotated[list[list[Number]], Tag("rows")],
    Discriminator(_values_kind),
    Field(
        min_length=1,
        description=(
            "Observations in original units, oldest first: numbers for a one-feature model, "
            "rows of `features` numbers for a multi-feature one."
        ),
        examples=[[0.1, 0.3, 0.5]],
    ),
]
# A time stamp: ISO 8601, with a UTC offset for models whose stamps have one.
Timestamp = Annotated[
    str,
    Field(
        min_length=4,
        max_length=64,
        description="ISO 8601 date or time, e.g. 2024-03-01 or 2024-03-31T03:00:00+02:00 "
        "(models trained on dated rows)",
        examples=["2024-03-01"],
    ),
]
StateMatrix = Annotated[list[list[Number]], Field(description="[num_layers][hidden]", min_length=1)]
# h is a tanh output: within [-1, 1] up to the runtime's float32 rounding. A larger h was
# never answered, and drives the recurrent matmul to inf and the answer to NaN.
H_LIMIT = 1.001
StateH = Annotated[
    list[list[Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-H_LIMIT, le=H_LIMIT)]]],
    Field(description=f"[num_layers][hidden], each within ±{H_LIMIT}", min_length=1),
]


class StrictModel(BaseModel):
    """A request body: unknown fields are refused, nothing is coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StateScale(StrictModel):
    """The running scale of normalized-conformal intervals, as an answer gave it."""

    mean_square: list[Annotated[Number, Field(ge=0.0)]] = Field(
        min_length=1,
        description="per target: the weighted mean of the squared one-step errors so far",
    )
    last: list[Number] | None = Field(
        None,
        description="per target: the last one-step prediction (in the intervals' units), "
        "which the next value is scored against; null: none yet",
    )


class State(StrictModel):
    """Recurrent state after the last observed value of an earlier answer."""

    model: str = Field(description="model name the state belongs to")
    version: Integer = Field(ge=1, description="model version the state belongs to")
    h: StateH
    c: StateMatrix | None = Field(None, description="LSTM cell state; absent for RNN and GRU")
    levels: Values | None = Field(
        None,
        description="models that difference their targets: the last observed target values "
        "(at most the lag), which the next values are differenced from; absent otherwise",
    )
    time: Timestamp | None = Field(
        None,
        description="models trained on dated rows: the stamp of the last observed value, "
        "which the next values follow",
    )
    scale: StateScale | None = Field(
        None,
        description="models with normalized-conformal intervals: the running scale of "
        "their widths; absent: it starts afresh (from the calibration's)",
    )


# Interval levels, each within (0, 1), e.g. [0.8, 0.95].
IntervalLevels = Annotated[
    list[Annotated[float, Field(strict=False, gt=0.0, lt=1.0, allow_inf_nan=False)]],
    Field(
        min_length=1,
        max_length=8,
        description="prediction interval levels in (0, 1), e.g. [0.8, 0.95]: each gives "
        "lower and upper bounds for every forecast step (models with calibrated intervals)",
    ),
]


class Interval(BaseModel):
    level: float
    lower: list[float] | list[list[float]]
    upper: list[float] | list[list[float]]


class SeriesRequest(StrictModel):
    values: Values
    state: State | None = Field(
        None, description="state to continue from; omitted: a fresh stream (zeros)"
    )
    horizon: Integer = Field(1, ge=1, description="forecast steps (bounded by max_horizon)")
    intervals: IntervalLevels | None = None
    timestamp: Timestamp | None = Field(
        None,
        description="the stamp of the first value (dated models; required with calendar "
        "inputs unless the state carries its time)",
    )


class PredictRequest(StrictModel):
    series: list[SeriesRequest] = Field(min_length=1)
    return_predictions: bool = Field(
        False, strict=True, description="also return the one-step prediction after every value"
    )
    return_state: bool = Field(True, strict=True, description="return the state after the values")


Output = list[float] | list[list[float]]


class SeriesResponse(BaseModel):
    forecast: Output = Field(
        description="next `horizon` steps: numbers for one target, rows for several"
    )
    state: State | None = Field(None, description="present when return_state is true")
    predictions: Output | None = Field(
        None, description="prediction of step t+1 after each value t; when return_predictions"
    )
    intervals: list[Interval] | None = Field(None, description="when intervals were asked for")
    forecast_timestamps: list[str] | None = Field(
        None, description="dated models: the stamp of each forecast step, when time is known"
    )


class PredictResponse(BaseModel):
    model: str
    version: int
    series: list[SeriesResponse]


class ErrorDetail(BaseModel):
    status: int
    code: str = Field(examples=["invalid_value"])
    message: str
    field: str | None = Field(None, examples=["series[0].values[3]"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class StateShape(BaseModel):
    h: list[int]
    c: list[int] | None


class VersionInfo(BaseModel):
    name: str
    version: int
    cell: str
    features: list[str]
    targets: list[str]
    num_layers: int
    hidden_size: int
    window: int
    max_horizon: int
    state_shape: StateShape
    providers: list[str]
    metrics: dict[str, Any]
    onnx: dict[str, Any]
    created_at: str | None
    time: dict[str, Any] | None = None


class ModelInfo(BaseModel):
    name: str
    default_version: int
    versions: list[int]
    latest: VersionInfo


class ModelList(BaseModel):
    models: list[ModelInfo]
