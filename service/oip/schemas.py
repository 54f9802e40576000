"""The Open Inference Protocol's request and answer bodies, as the protocol declares them.

The declaration of the infer route (service.api.routes.v2) names these; requests are
checked by service.oip.header, by hand, which measured faster than these models.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Field, StrictBool, StrictFloat, StrictInt, StrictStr, Tag

from service.api.schemas import Integer, Number, StrictModel

MAX_DIMS = 8  # more dimensions than any tensor here has: refused before any arithmetic
MAX_TENSORS = 16  # inputs, and outputs asked for, in one request

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
    inputs: list[RequestInput] = Field(min_length=1, max_length=MAX_TENSORS)
    outputs: list[RequestOutput] | None = Field(None, max_length=MAX_TENSORS)
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
