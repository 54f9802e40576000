"""The Open Inference Protocol's tensors: from a request body into arrays, and back.

A request body is a JSON object (service.oip.header), optionally followed by the raw
bytes of the tensors whose `binary_data_size` parameter says how many bytes they take,
in the order the inputs are listed; the `Inference-Header-Content-Length` header gives
the JSON's length. Binary tensors become read-only numpy views of the body (no copy, no
per-element Python); JSON tensor data is checked in pydantic's Rust core (strict, finite
numbers) and converted by numpy. Answers are built the same two ways, per output.

Nothing here knows seqcast's models: names, shapes and meanings are service.oip.model's.
A refusal is an InputError naming the tensor or parameter at fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np
import orjson
from pydantic import TypeAdapter, ValidationError

from service.inputs import InputError, shown
from service.oip.header import Request, TensorIn, parsed
from service.oip.schemas import TensorData

# Datatypes seqcast takes (values and states are real numbers) and how they lie in bytes.
DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
OUTPUT_DATATYPE = "FP32"
HEADER_LENGTH = b"inference-header-content-length"
# Input parameters other clients send that change nothing here (MLServer's codecs).
_IGNORED_INPUT_PARAMETERS = frozenset({"content_type"})
# JSON tensor data: strict finite numbers, checked in pydantic's Rust core.
_DATA = TypeAdapter(TensorData)


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
    request = parsed(body if json_end == size else body[:json_end], json_end != size)
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
