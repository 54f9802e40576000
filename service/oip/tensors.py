"""The Open Inference Protocol's REST bodies: tensors in JSON and in the binary extension.

A request body is a JSON object, optionally followed by the raw bytes of the tensors
whose `binary_data_size` parameter says how many bytes they take, in the order the
inputs are listed; the `Inference-Header-Content-Length` header gives the JSON's length.
Binary tensors become arrays with numpy.frombuffer (no copy, no per-element Python);
JSON tensor data is checked in pydantic's Rust core (strict, finite numbers) and
converted by numpy. Answers are built the same two ways, per output.

Nothing here knows seqcast's models: names, shapes and meanings are service.oip.model's.
A refusal is an InputError naming the tensor or parameter at fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import prod
from typing import Annotated, Any

import numpy as np
import orjson
from pydantic import (
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
)

from service.api.schemas import Integer, Number, StrictModel
from service.inputs import InputError, shown

# Datatypes seqcast takes (values and states are real numbers) and how they lie in bytes.
DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
OUTPUT_DATATYPE = "FP32"
HEADER_LENGTH = b"inference-header-content-length"
MAX_DIMS = 8  # more dimensions than any tensor here has: refused before any arithmetic

ParamValue = StrictBool | StrictInt | StrictFloat | StrictStr
Parameters = dict[str, ParamValue]


def _depth(value: Any) -> str:
    depth = 1
    while isinstance(value, list) and value and isinstance(value[0], list):
        value, depth = value[0], depth + 1
    return str(min(depth, 3))


# Flat ("linear" order) or nested in the tensor's own shape, up to 3 dimensions.
TensorData = Annotated[
    Annotated[list[Number], Tag("1")]
    | Annotated[list[list[Number]], Tag("2")]
    | Annotated[list[list[list[Number]]], Tag("3")],
    Discriminator(_depth),
]
Dim = Annotated[Integer, Field(ge=0)]


class RequestInput(StrictModel):
    name: str
    shape: list[Dim] = Field(max_length=MAX_DIMS)
    datatype: str
    parameters: Parameters | None = None
    data: TensorData | None = None


class RequestOutput(StrictModel):
    name: str
    parameters: Parameters | None = None


class InferenceRequest(StrictModel):
    """$inference_request of the protocol."""

    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=16)
    outputs: list[RequestOutput] | None = Field(None, max_length=16)
    # Some clients repeat the path's model in the body; the path decides.
    model_name: str | None = None
    model_version: str | None = None


class ResponseOutput(StrictModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[float] | None = None


class InferenceResponse(StrictModel):
    """$inference_response of the protocol (binary outputs follow the JSON)."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


# Input parameters other clients send that change nothing here (MLServer's codecs).
_IGNORED_INPUT_PARAMETERS = frozenset({"content_type"})
_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs", "model_name", "model_version"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_OUTPUT_KEYS = frozenset({"name", "parameters"})
_MAX_TENSORS = 16
# JSON tensor data: strict finite numbers, checked in pydantic's Rust core.
_DATA = TypeAdapter(TensorData)


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


@dataclass(frozen=True, slots=True)
class Decoded:
    """A request: its JSON part, and each input's data as an array of its shape."""

    request: Request
    tensors: Mapping[str, np.ndarray]  # by input name: float32 or float64, as sent


def decode(body: bytes, header_length: bytes | None) -> Decoded:
    """The inference request in `body`; `header_length`: Inference-Header-Content-Length."""
    size = len(body)
    if header_length is None:
        json_end = size
    else:
        if not header_length.isdigit() or len(header_length) > 19:
            raise InputError(
                "invalid_value",
                "Inference-Header-Content-Length must be a whole number of bytes",
                "Inference-Header-Content-Length",
            )
        json_end = int(header_length)
        if json_end == 0:
            raise InputError(
                "invalid_value",
                "a request without its JSON header (Inference-Header-Content-Length: 0) "
                "is not supported: the inputs values, h and c need their names and shapes",
                "Inference-Header-Content-Length",
            )
        if json_end > size:
            raise InputError(
                "invalid_value",
                f"Inference-Header-Content-Length is {json_end}, more than the body's {size} bytes",
                "Inference-Header-Content-Length",
            )
    request = _parsed(body if json_end == size else body[:json_end], json_end != size)
    tensors: dict[str, np.ndarray] = {}
    at = json_end  # where the next binary tensor starts
    for i, tensor in enumerate(request.inputs):
        if tensor.name in tensors:
            raise InputError(
                "invalid_value",
                f"input {shown(tensor.name)!r} is given twice",
                f"inputs[{i}].name",
            )
        array, at = _input_array(tensor, i, body, at, size, header_length is not None)
        tensors[tensor.name] = array
    if at != size:
        raise InputError(
            "invalid_value",
            f"the body has {size - at} bytes after the JSON header and the binary tensors "
            "that its binary_data_size parameters account for",
            "binary_data_size",
        )
    return Decoded(request, tensors)


# Parsed headers of binary requests, by their bytes. Such a header holds names, shapes and
# parameters but no data, so a client streaming one shape sends the very same header
# every time (tritonclient does): it is parsed once. Bounded in count and in size.
_HEADERS: dict[bytes, Request] = {}
_HEADERS_MAX = 256
_HEADER_MAX_BYTES = 2048


def _parsed(header: bytes, binary: bool) -> Request:
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


# The request's JSON checked by hand: measured, pydantic models cost the binary path more
# than the rest of the decoding (a few microseconds per object). Each object is taken by a
# fast check of its usual form; anything else gets the careful one, which names the field.
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
    raw_inputs = _list(top["inputs"], "inputs", 1, _MAX_TENSORS)
    inputs = [_tensor(item, i) for i, item in enumerate(raw_inputs)]
    outputs = None
    if top.get("outputs") is not None:
        raw_outputs = _list(top["outputs"], "outputs", 0, _MAX_TENSORS)
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


def _json_data(tensor: TensorIn, i: int) -> np.ndarray:
    """A JSON input's data as float64, each number strict and finite (pydantic's core)."""
    try:
        checked = _DATA.validate_python(tensor.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        index = "".join(f"[{p}]" for p in first["loc"] if isinstance(p, int))
        field = f"inputs[{i}].data{index}"
        raise InputError(
            "invalid_value",
            f"input {shown(tensor.name)!r} ({field}): {first['msg']}",
            field,
        ) from None
    try:
        return np.asarray(checked, dtype=np.float64)
    except ValueError:
        raise InputError(
            "invalid_shape",
            f"input {shown(tensor.name)!r}: data is ragged (nested lists of different lengths)",
            f"inputs[{i}].data",
        ) from None


def _input_array(
    tensor: TensorIn, i: int, body: bytes, at: int, size: int, has_header_length: bool
) -> tuple[np.ndarray, int]:
    """The input's data shaped as it says, and where the next binary tensor starts."""
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None:
        raise InputError(
            "invalid_value",
            f"input {shown(tensor.name)!r} has datatype {shown(tensor.datatype)!r}; seqcast "
            "takes FP32 or FP64",
            f"inputs[{i}].datatype",
        )
    parameters = tensor.parameters
    binary_size = parameters.get("binary_data_size")
    if len(parameters) != (binary_size is not None) or type(binary_size) not in (int, type(None)):
        binary_size = _binary_size(tensor, i)  # other parameters, or not a size: look closer
    count = prod(tensor.shape)
    if (
        binary_size is not None
        and binary_size == count * dtype.itemsize
        and at + binary_size <= size
        and tensor.data is None
        and has_header_length
    ):  # the usual binary tensor, read in place: the checks below explain any other
        # A read-only view of the body, shaped in the same call: no copy.
        return np.ndarray(tensor.shape, dtype, body, at), at + binary_size
    name = shown(tensor.name)
    if binary_size is None:
        if tensor.data is None:
            raise InputError(
                "missing_field",
                f"input {name!r} has no data: give it `data`, or send it as binary with "
                "the parameter binary_data_size",
                f"inputs[{i}].data",
            )
        array = _json_data(tensor, i)
        if array.size != count:
            raise InputError(
                "invalid_shape",
                f"input {name!r}: data has {array.size} numbers, its shape {tensor.shape} "
                f"holds {count}",
                f"inputs[{i}].data",
            )
        return array.reshape(tensor.shape), at
    if tensor.data is not None:
        raise InputError(
            "invalid_value",
            f"input {name!r} has both data and binary_data_size; send one",
            f"inputs[{i}].data",
        )
    if not has_header_length:
        raise InputError(
            "missing_field",
            f"input {name!r} is binary (binary_data_size) but the request has no "
            "Inference-Header-Content-Length header giving the JSON's length",
            "Inference-Header-Content-Length",
        )
    if binary_size != count * dtype.itemsize:
        raise InputError(
            "invalid_value",
            f"input {name!r}: binary_data_size is {binary_size} bytes, its shape "
            f"{tensor.shape} of {tensor.datatype} takes {count * dtype.itemsize}",
            f"inputs[{i}].parameters.binary_data_size",
        )
    if at + binary_size > size:
        raise InputError(
            "invalid_value",
            f"input {name!r}: binary_data_size is {binary_size} bytes, but only "
            f"{size - at} bytes of the body are left for it",
            f"inputs[{i}].parameters.binary_data_size",
        )
    raise AssertionError("unreachable: the fast path takes every other binary tensor")


def _binary_size(tensor: TensorIn, i: int) -> int | None:
    size: int | None = None
    for key, value in tensor.parameters.items():
        if key == "binary_data_size":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(
                    "invalid_value",
                    f"input {shown(tensor.name)!r}: binary_data_size must be a whole number "
                    "of bytes",
                    f"inputs[{i}].parameters.binary_data_size",
                )
            size = value
        elif key.startswith("shared_memory"):
            raise InputError(
                "invalid_value",
                "shared memory is not supported: send tensors in the body",
                f"inputs[{i}].parameters.{key}",
            )
        elif key not in _IGNORED_INPUT_PARAMETERS:
            raise InputError(
                "unknown_field",
                f"input {shown(tensor.name)!r}: unknown parameter {shown(key)!r}; inputs "
                "take binary_data_size",
                f"inputs[{i}].parameters.{shown(key)}",
            )
    return size


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


_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


# An output to answer: its name, its numbers (any shape of that size), its shape, and
# whether it goes as binary.
OutputTensor = tuple[str, np.ndarray, tuple[int, ...], bool]


def encode(head: dict[str, Any], outputs: Sequence[OutputTensor]) -> tuple[bytes, int | None]:
    """The answer body for `head` (model_name, model_version, id, parameters) and the
    outputs: the JSON alone, or the JSON followed by the binary outputs with the JSON's
    length (for Inference-Header-Content-Length)."""
    described = []
    chunks: list[Any] = []
    for name, array, shape, binary in outputs:
        data = np.ascontiguousarray(array, dtype="<f4")
        item: dict[str, Any] = {"name": name, "datatype": OUTPUT_DATATYPE, "shape": shape}
        if binary:
            item["parameters"] = {"binary_data_size": data.nbytes}
            chunks.append(data)  # a buffer: joined below without another copy
        else:
            item["data"] = data.ravel()
        described.append(item)
    header = orjson.dumps({**head, "outputs": described}, option=_OPTIONS)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
