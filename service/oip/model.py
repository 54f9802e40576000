"""A seqcast model as the Open Inference Protocol sees it: its tensors, its parameters.

Inputs, in original units:
    values  FP32 or FP64  [B, T, F]  ([T] or [B, T] for a one-feature model)
    h       FP32 or FP64  [B, L, H]  optional: the state to continue from (batch first)
    c       FP32 or FP64  [B, L, H]  LSTM only, with h
Outputs, FP32:
    forecast     [B, horizon, O]
    predictions  [B, T, O]       only when asked for
    h, c         [B, L, H]       the state after the last value (c for an LSTM)
Request parameters: horizon, binary_data_output, and the sequence parameters
(service.oip.sequences).

The mapping is all this module does: the values, state and horizon go through the one
validator (service.inputs) and the model runs on the runner, as /v1 predict does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.api.schemas import H_LIMIT
from service.inference import SeriesInput, SeriesOutput
from service.inputs import InputError, Limits, check_horizon, rows_array, shown, state_rows
from service.oip.header import Wanted
from service.oip.tensors import OutputTensor
from service.repository import LoadedModel

PLATFORM = "onnx_onnxv1"  # the protocol's name for an ONNX model on ONNX Runtime
DEFAULT_OUTPUTS = ("forecast", "h", "c")  # predictions only when asked for
# Request parameters that change nothing here: tritonclient's priority and timeout.
_IGNORED = frozenset({"priority", "timeout"})
_KNOWN = (
    "horizon",
    "binary_data_output",
    "sequence_id",
    "sequence_start",
    "sequence_end",
    "sequence_offset",
)
_ALLOWED = frozenset(_KNOWN) | _IGNORED
MAX_SEQUENCE_ID = 2**64 - 1
MAX_SEQUENCE_ID_CHARS = 256


def tensor_metadata(model: LoadedModel) -> dict[str, list[dict[str, Any]]]:
    """The model metadata's inputs and outputs, -1 for the dimensions a request chooses."""
    arch = model.manifest.architecture
    layers, hidden = model.state_shape
    lstm = model.manifest.is_lstm

    def tensor(name: str, shape: list[int]) -> dict[str, Any]:
        return {"name": name, "datatype": "FP32", "shape": shape}

    state = [-1, layers, hidden]
    inputs = [tensor("values", [-1, -1, arch.input_size]), tensor("h", state)]
    outputs = [
        tensor("forecast", [-1, -1, arch.output_size]),
        tensor("predictions", [-1, -1, arch.output_size]),
        tensor("h", state),
    ]
    if lstm:
        inputs.append(tensor("c", state))
        outputs.append(tensor("c", state))
    return {"inputs": inputs, "outputs": outputs}


@dataclass(frozen=True, slots=True)
class SequenceParams:
    """The sequence parameters of a request that belongs to one."""

    id: int | str
    start: bool
    end: bool
    offset: int | None  # exactly-once: where the step applies; None: where it stands


@dataclass(frozen=True, slots=True)
class Params:
    horizon: int
    binary_output: bool
    sequence: SequenceParams | None


_PLAIN = Params(horizon=1, binary_output=False, sequence=None)  # a request without parameters


def request_params(parameters: Mapping[str, Any] | None) -> Params:
    """The request's parameters, checked; an unknown one is refused (a misspelt horizon
    must not silently become the default)."""
    if not parameters:
        return _PLAIN
    given = parameters
    if not given.keys() <= _ALLOWED:
        key = next(k for k in given if k not in _ALLOWED)
        raise InputError(
            "unknown_field",
            f"unknown parameter {shown(key)!r}; seqcast takes {', '.join(_KNOWN)}",
            f"parameters.{shown(key)}",
        )
    horizon = _whole(given, "horizon", 1, 1)
    binary = _flag(given, "binary_data_output")
    start, end = _flag(given, "sequence_start"), _flag(given, "sequence_end")
    sequence_id = _sequence_id(given.get("sequence_id", 0))
    offset = None if "sequence_offset" not in given else _whole(given, "sequence_offset", 0, 0)
    if sequence_id is None:
        for name, on in (("sequence_start", start), ("sequence_end", end)):
            if on:
                raise InputError(
                    "missing_field",
                    f"{name} needs a sequence_id (a non-zero uint64 or a non-empty string)",
                    "parameters.sequence_id",
                )
        if offset is not None:
            raise InputError(
                "missing_field", "sequence_offset needs a sequence_id", "parameters.sequence_id"
            )
        return Params(horizon, binary, None)
    if start and offset not in (None, 0):
        raise InputError(
            "invalid_value",
            f"sequence_offset is {offset} with sequence_start: a sequence starts at 0",
            "parameters.sequence_offset",
        )
    return Params(horizon, binary, SequenceParams(sequence_id, start, end, offset))


def _flag(given: Mapping[str, Any], name: str) -> bool:
    value = given.get(name, False)
    if not isinstance(value, bool):
        raise InputError(
            "invalid_value", f"parameter {name} must be true or false", f"parameters.{name}"
        )
    return value


def _whole(given: Mapping[str, Any], name: str, default: int, low: int) -> int:
    value = given.get(name, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON does not tell 3 from 3.0
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(
            "invalid_value",
            f"parameter {name} must be a whole number >= {low}",
            f"parameters.{name}",
        )
    return value


def _sequence_id(value: Any) -> int | str | None:
    """The sequence id; None for 0 or "" (not in a sequence, as the protocol says)."""
    if isinstance(value, str):
        if len(value) > MAX_SEQUENCE_ID_CHARS:
            raise InputError(
                "limit_exceeded",
                f"sequence_id has {len(value)} characters, over the limit {MAX_SEQUENCE_ID_CHARS}",
                "parameters.sequence_id",
            )
        return value or None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQUENCE_ID:
        raise InputError(
            "invalid_value",
            "sequence_id must be a uint64 or a string",
            "parameters.sequence_id",
        )
    return value or None


def check_input_names(tensors: Mapping[str, np.ndarray], model: LoadedModel) -> None:
    taken = ("values", "h", "c") if model.manifest.is_lstm else ("values", "h")
    for name in tensors:
        if name not in taken:
            raise InputError(
                "unknown_field",
                f"unknown input {shown(name)!r}; model {model.name!r} takes {', '.join(taken)}",
                f"inputs.{shown(name)}",
            )
    if "values" not in tensors:
        raise InputError("missing_field", "the input values is required", "inputs.values")


def values_batch(values: np.ndarray, model: LoadedModel) -> np.ndarray:
    """The values tensor as [B, T, F] (a view): [T] and [B, T] are a one-feature model's."""
    n_features = model.client_inputs
    if values.ndim == 3:
        return values
    if values.ndim in (1, 2) and n_features == 1:
        return values.reshape((1, *values.shape, 1) if values.ndim == 1 else (*values.shape, 1))
    raise InputError(
        "invalid_shape",
        f"values must be [batch, time, {n_features}] for model {model.name!r} "
        f"({', '.join(model.manifest.features)})"
        + ("" if n_features > 1 else ", or [time] or [batch, time]")
        + f", got {list(values.shape)}",
        "values",
    )


def plain_only(model: LoadedModel) -> None:
    """Refuse a model whose predictions need more state than h and c (levels of a
    differenced target, the time of a dated model): the protocol's tensors have no place
    for it. The running scale of adaptive intervals is not such state: the protocol
    returns no intervals, so it serves those models on h and c alone."""
    if model.transformed or model.timed:
        what = "transforms its target" if model.transformed else "takes inputs from time stamps"
        raise InputError(
            "invalid_value",
            f"model {model.name!r} {what}, so its state carries more than h and c; the Open "
            "Inference Protocol endpoints serve models without either: use /v1 for it",
            "model",
        )


def series_inputs(
    tensors: Mapping[str, np.ndarray], model: LoadedModel, limits: Limits, horizon: int
) -> list[SeriesInput]:
    """Every series of a request, checked as /v1 predict checks its series."""
    plain_only(model)
    values = values_batch(tensors["values"], model)  # (B, T, F)
    batch, steps = values.shape[0], values.shape[1]
    if batch == 0:
        raise InputError("invalid_value", "values has no series (batch 0)", "values")
    if batch > limits.max_series:
        raise InputError(
            "limit_exceeded",
            f"values has {batch} series (its batch dimension), over the limit "
            f"max_series_per_request={limits.max_series}",
            "values",
        )
    check_horizon(horizon, model, limits, "horizon")
    if batch * (steps + horizon - 1) > limits.max_work:
        raise InputError(
            "limit_exceeded",
            f"the request asks for {batch * (steps + horizon - 1)} steps of work (batch x "
            f"(time + horizon - 1)), over the limit max_work_per_request={limits.max_work}",
            "values",
        )
    h, c = state_rows(tensors.get("h"), tensors.get("c"), model, batch, H_LIMIT)
    out = []
    for b in range(batch):  # per series, as /v1: each is its own row with its own state
        rows = rows_array(values[b], model, limits, f"values[{b}]")
        out.append(
            SeriesInput(
                values=rows,
                h=None if h is None else h[b],
                c=None if c is None else c[b],
                horizon=horizon,
            )
        )
    return out


def output_tensors(
    outputs: Sequence[SeriesOutput], chosen: Sequence[tuple[str, bool]]
) -> list[OutputTensor]:
    """The chosen outputs of a request's series, each over the batch, as encode takes them."""
    if len(outputs) == 1:  # the common case: the arrays as they are, a batch of 1 in shape
        (out,) = outputs
        one = {"forecast": out.forecast, "predictions": out.predictions, "h": out.h, "c": out.c}
        return one_series(one, chosen)
    found: list[OutputTensor] = []
    for name, binary in chosen:
        parts = [getattr(out, name) for out in outputs]
        if parts[0] is not None:
            stacked = np.stack(parts)
            found.append((name, stacked, stacked.shape, binary))
    return found


def one_series(
    arrays: Mapping[str, np.ndarray | None], chosen: Sequence[tuple[str, bool]]
) -> list[OutputTensor]:
    """One series' outputs, shaped as a batch of 1 (no copies, no views)."""
    found: list[OutputTensor] = []
    for name, binary in chosen:
        array = arrays[name]
        if array is not None:
            found.append((name, array, (1, *array.shape), binary))
    return found


def chosen_outputs(
    wanted: Sequence[Wanted] | None, model: LoadedModel, binary_output: bool
) -> list[tuple[str, bool]]:
    """(output name, as binary) in answer order: the ones asked for, else the defaults."""
    names = (
        ("forecast", "predictions", "h", "c")
        if model.manifest.is_lstm
        else (
            "forecast",
            "predictions",
            "h",
        )
    )
    if wanted is None:
        return [(name, binary_output) for name in DEFAULT_OUTPUTS if name in names]
    chosen = []
    seen = set()
    for i, want in enumerate(wanted):
        if want.name not in names:
            raise InputError(
                "unknown_field",
                f"unknown output {shown(want.name)!r}; model {model.name!r} gives "
                f"{', '.join(names)}",
                f"outputs[{i}].name",
            )
        if want.name in seen:
            raise InputError(
                "invalid_value", f"output {want.name!r} is asked for twice", f"outputs[{i}].name"
            )
        seen.add(want.name)
        chosen.append((want.name, binary_output if want.binary is None else want.binary))
    return chosen
