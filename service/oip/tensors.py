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


@dataclass(frozen=True, slots=True)
class Decoded:
    """A request: its JSON part, and each input's data as an array of its shape."""

    request: InferenceRequest
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
    request = _parse(body if json_end == size else body[:json_end])
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


def _parse(header: bytes) -> InferenceRequest:
    if not header or header.isspace():
        raise InputError("invalid_json", "the request body is empty; send an inference request")
    try:
        parsed: InferenceRequest = InferenceRequest.__pydantic_validator__.validate_json(header)
    except ValidationError as exc:
        raise _refusal(exc, header) from None
    return parsed


def _refusal(exc: ValidationError, header: bytes) -> InputError:
    """The first pydantic error, naming the input by its name where there is one."""
    first = exc.errors()[0]
    loc = [p for p in first["loc"] if p not in ("1", "2", "3")]  # union tags
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    if first["type"] in ("json_invalid", "json_type"):
        message = f"{first['msg']}; the inference request must be a JSON object"
        return InputError("invalid_json", message, None)
    where = field or "the request"
    if len(loc) >= 2 and loc[0] == "inputs" and isinstance(loc[1], int):
        name = _input_name(header, loc[1])
        if name is not None:
            where = f"input {shown(name)!r} ({field})"
    return InputError("invalid_value", f"{where}: {first['msg']}", field or None)


def _input_name(header: bytes, index: int) -> str | None:
    """The name of inputs[index] in a request that did not validate (error path only)."""
    try:
        name = orjson.loads(header)["inputs"][index]["name"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    return name if isinstance(name, str) else None


def _input_array(
    tensor: RequestInput, i: int, body: bytes, at: int, size: int, has_header_length: bool
) -> tuple[np.ndarray, int]:
    """The input's data shaped as it says, and where the next binary tensor starts."""
    name = shown(tensor.name)
    dtype = DTYPES.get(tensor.datatype)
    if dtype is None:
        raise InputError(
            "invalid_value",
            f"input {name!r} has datatype {shown(tensor.datatype)!r}; seqcast takes FP32 or FP64",
            f"inputs[{i}].datatype",
        )
    binary_size = _binary_size(tensor, i)
    count = prod(tensor.shape)
    if binary_size is None:
        if tensor.data is None:
            raise InputError(
                "missing_field",
                f"input {name!r} has no data: give it `data`, or send it as binary with "
                "the parameter binary_data_size",
                f"inputs[{i}].data",
            )
        try:
            array = np.asarray(tensor.data, dtype=np.float64)
        except ValueError:
            raise InputError(
                "invalid_shape",
                f"input {name!r}: data is ragged (nested lists of different lengths)",
                f"inputs[{i}].data",
            ) from None
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
    array = np.frombuffer(body, dtype=dtype, count=count, offset=at)  # read-only, no copy
    return array.reshape(tensor.shape), at + binary_size


def _binary_size(tensor: RequestInput, i: int) -> int | None:
    size: int | None = None
    for key, value in (tensor.parameters or {}).items():
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


@dataclass(frozen=True, slots=True)
class Wanted:
    """An output a request asks for, and whether it wants it as binary."""

    name: str
    binary: bool | None  # None: as the request's binary_data_output says


def wanted_outputs(request: InferenceRequest) -> list[Wanted] | None:
    """The outputs asked for, in order; None when the request names none (all of them)."""
    if request.outputs is None:
        return None
    wanted = []
    for i, output in enumerate(request.outputs):
        binary: bool | None = None
        for key, value in (output.parameters or {}).items():
            if key == "binary_data":
                if not isinstance(value, bool):
                    raise InputError(
                        "invalid_value",
                        f"output {shown(output.name)!r}: binary_data must be true or false",
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
                    f"output {shown(output.name)!r}: unknown parameter {shown(key)!r}; outputs "
                    "take binary_data",
                    f"outputs[{i}].parameters.{shown(key)}",
                )
        wanted.append(Wanted(output.name, binary))
    return wanted


_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def encode(
    head: dict[str, Any], outputs: Sequence[tuple[str, np.ndarray, bool]]
) -> tuple[bytes, int | None]:
    """The answer body for `head` (model_name, model_version, id, parameters) and the
    outputs (name, float32 array, as binary): the JSON alone, or the JSON followed by the
    binary outputs with the JSON's length (for Inference-Header-Content-Length)."""
    described = []
    chunks: list[Any] = []
    for name, array, binary in outputs:
        data = np.ascontiguousarray(array, dtype="<f4")
        item: dict[str, Any] = {"name": name, "datatype": OUTPUT_DATATYPE, "shape": data.shape}
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
