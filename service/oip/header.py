"""The JSON header of an Open Inference Protocol request, checked against the protocol.

Checked by hand: measured, pydantic models cost the binary path more than the rest of
its decoding (a few microseconds per object). Each object is taken by a fast check of
its usual form; anything else gets the careful one, which names the field at fault.
A binary request's header holds names, shapes and parameters but no data, so a client
streaming one shape sends the very same header every time (tritonclient does): its
parse is kept, bounded in count and size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from service.inputs import InputError, shown
from service.oip.schemas import MAX_DIMS, MAX_TENSORS

_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs", "model_name", "model_version"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_OUTPUT_KEYS = frozenset({"name", "parameters"})


@dataclass(frozen=True, slots=True)
class Wanted:
    """An output a request asks for, and whether it wants it as binary."""

    name: str
    binary: bool | None  # None: as the request's binary_data_output says


@dataclass(frozen=True, slots=True)
class TensorIn:
    """One input as the request's JSON describes it (checked: types and shape). Shared by
    the requests whose headers are the same bytes: never changed after the parse."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any]
    data: list[Any] | None


@dataclass(frozen=True, slots=True)
class Request:
    """The request's JSON, checked against the protocol's types (never changed)."""

    id: str | None
    parameters: dict[str, Any]
    inputs: list[TensorIn]
    outputs: list[Wanted] | None  # the outputs asked for, in order; None: the defaults


# Parsed headers of binary requests, by their bytes (see the module docstring).
_HEADERS: dict[bytes, Request] = {}
_HEADERS_MAX = 256
_HEADER_MAX_BYTES = 2048


def parsed(header: bytes, binary: bool) -> Request:
    """The request a JSON header describes; a repeated binary header from the cache."""
    if not binary or len(header) > _HEADER_MAX_BYTES:
        return _request(_json(header))
    request = _HEADERS.get(header)
    if request is None:
        request = _request(_json(header))
        if any(tensor.data is not None for tensor in request.inputs):
            return request  # data in the JSON: not worth keeping
        if len(_HEADERS) >= _HEADERS_MAX:
            del _HEADERS[next(iter(_HEADERS))]  # the oldest
        _HEADERS[header] = request
    return request


def _json(header: bytes) -> Any:
    if not header or header.isspace():
        raise InputError("invalid_json", "the request body is empty; send an inference request")
    try:
        return orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InputError(
            "invalid_json",
            f"the body is not valid JSON ({exc}); the inference request must be a JSON "
            "object, and NaN and Infinity are not JSON numbers",
        ) from None


_SCALARS = frozenset({str, int, float, bool})


def _refuse(field: str, message: str, code: str = "invalid_value") -> InputError:
    return InputError(code, f"{field}: {message}", field)


def _object(value: Any, field: str | None, keys: frozenset[str]) -> dict[str, Any]:
    """A JSON object with only these keys; `field` None: the request itself."""
    if not isinstance(value, dict):
        if field is None:
            raise InputError("invalid_json", "the inference request must be a JSON object")
        raise _refuse(field, "must be a JSON object")
    for key in value:
        if key not in keys:
            name = shown(key) if field is None else f"{field}.{shown(key)}"
            expected = ", ".join(sorted(keys))
            raise _refuse(name, f"unknown field; expected {expected}", "unknown_field")
    return value


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _refuse(field, "must be a string")
    return value


def _list(value: Any, field: str, low: int, high: int) -> list[Any]:
    if not isinstance(value, list):
        raise _refuse(field, "must be a list")
    if not low <= len(value) <= high:
        raise _refuse(field, f"must have {low} to {high} items, not {len(value)}")
    return value


def _scalars(value: Any) -> bool:
    """A parameters object in its usual form: absent, or names to strings, numbers, flags."""
    if value is None:
        return True
    if type(value) is not dict:
        return False
    return _SCALARS.issuperset(map(type, value.values()))  # no generator: measured


def _parameters(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _refuse(field, "must be a JSON object")
    for key, item in value.items():
        if not isinstance(item, str | int | float):  # bool is an int
            raise _refuse(f"{field}.{shown(key)}", "must be a string, a number or a boolean")
    return value


def _request(value: Any) -> Request:
    """The protocol's $inference_request, checked."""
    top = _object(value, None, _REQUEST_KEYS)
    request_id = top.get("id")
    if request_id is not None:
        _string(request_id, "id")
    if "inputs" not in top:
        raise _refuse("inputs", "is required", "missing_field")
    raw_inputs = _list(top["inputs"], "inputs", 1, MAX_TENSORS)
    inputs = [_tensor(item, i) for i, item in enumerate(raw_inputs)]
    outputs = None
    if top.get("outputs") is not None:
        raw_outputs = _list(top["outputs"], "outputs", 0, MAX_TENSORS)
        outputs = [_output(item, i) for i, item in enumerate(raw_outputs)]
    for key in ("model_name", "model_version"):  # some clients repeat the path's; it decides
        if top.get(key) is not None:
            _string(top[key], key)
    return Request(request_id, _parameters(top.get("parameters"), "parameters"), inputs, outputs)


def _tensor(item: Any, i: int) -> TensorIn:
    if type(item) is dict and item.keys() <= _INPUT_KEYS:
        name, shape, datatype = item.get("name"), item.get("shape"), item.get("datatype")
        parameters, data = item.get("parameters"), item.get("data")
        if (
            type(name) is str
            and type(datatype) is str
            and type(shape) is list
            and len(shape) <= MAX_DIMS
            and (data is None or type(data) is list)
            and _scalars(parameters)
        ):
            for dim in shape:
                if type(dim) is not int or dim < 0:
                    break
            else:
                return TensorIn(name, shape, datatype, parameters or {}, data)
    return _tensor_careful(item, i)


def _tensor_careful(raw: Any, i: int) -> TensorIn:
    field = f"inputs[{i}]"
    item = _object(raw, field, _INPUT_KEYS)
    for key in ("name", "shape", "datatype"):
        if key not in item:
            raise _refuse(f"{field}.{key}", "is required", "missing_field")
    shape = _list(item["shape"], f"{field}.shape", 0, MAX_DIMS)
    for d, dim in enumerate(shape):
        if isinstance(dim, float) and dim.is_integer():
            shape[d] = dim = int(dim)  # JSON does not tell 3 from 3.0
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise _refuse(f"{field}.shape[{d}]", "must be a whole number >= 0")
    data = item.get("data")
    if data is not None and not isinstance(data, list):
        raise _refuse(f"{field}.data", "must be a list of numbers")
    return TensorIn(
        name=_string(item["name"], f"{field}.name"),
        shape=shape,
        datatype=_string(item["datatype"], f"{field}.datatype"),
        parameters=_parameters(item.get("parameters"), f"{field}.parameters"),
        data=data,
    )


def _output(raw: Any, i: int) -> Wanted:
    if type(raw) is dict and raw.keys() <= _OUTPUT_KEYS:
        name, parameters = raw.get("name"), raw.get("parameters")
        if type(name) is str and _scalars(parameters):
            return _wanted(name, parameters or {}, i)
    field = f"outputs[{i}]"
    item = _object(raw, field, _OUTPUT_KEYS)
    if "name" not in item:
        raise _refuse(f"{field}.name", "is required", "missing_field")
    name = _string(item["name"], f"{field}.name")
    return _wanted(name, _parameters(item.get("parameters"), f"{field}.parameters"), i)


def _wanted(name: str, parameters: dict[str, Any], i: int) -> Wanted:
    """An output asked for, its parameters checked."""
    binary: bool | None = None
    for key, value in parameters.items():
        if key == "binary_data":
            if not isinstance(value, bool):
                raise InputError(
                    "invalid_value",
                    f"output {shown(name)!r}: binary_data must be true or false",
                    f"outputs[{i}].parameters.binary_data",
                )
            binary = value
        elif key.startswith("shared_memory"):
            raise InputError(
                "invalid_value",
                "shared memory is not supported: outputs come in the body",
                f"outputs[{i}].parameters.{key}",
            )
        elif key == "classification":
            raise InputError(
                "invalid_value",
                "the classification extension is not supported: outputs are forecasts",
                f"outputs[{i}].parameters.classification",
            )
        else:
            raise InputError(
                "unknown_field",
                f"output {shown(name)!r}: unknown parameter {shown(key)!r}; outputs take "
                "binary_data",
                f"outputs[{i}].parameters.{shown(key)}",
            )
    return Wanted(name, binary)
