"""The Open Inference Protocol (KServe v2) under /v2: health, metadata and infer.

Thin over what /v1 uses: service.oip maps the protocol's tensors and parameters onto
the inputs the one validator checks, the runner runs them as it runs /v1 predict's, and
a sequence is a server session. Every request passes the front door, which answers
errors here in the protocol's form, {"error": "..."} (service.api.errors). Infer is a
declared route (the front door answers it directly, as /v1 predict); the protocol
documents /v2 itself, so none of it is in /openapi.json.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter

from service import __version__
from service.api.body_routes import Answer, BodyRoute, Call, int_param
from service.api.encoding import OrjsonResponse
from service.api.errors import ApiError
from service.api.routes.health import readiness
from service.api.state import AppState, StateDep
from service.oip.model import (
    PLATFORM,
    Params,
    check_input_names,
    chosen_outputs,
    one_series,
    output_tensors,
    request_params,
    series_inputs,
    tensor_metadata,
    values_batch,
)
from service.oip.schemas import InferenceRequest, InferenceResponse
from service.oip.sequences import shown_id, step
from service.oip.tensors import HEADER_LENGTH, Decoded, OutputTensor, decode, encode
from service.repository import LoadedModel
from service.sessions.manager import OffsetConflict
from service.sessions.store import SessionExists
from service.settings import Settings

router = APIRouter(prefix="/v2", tags=["v2"], include_in_schema=False)

_BINARY = b"application/octet-stream"


def extensions(settings: Settings) -> list[str]:
    """What the server metadata says this server supports beyond the core protocol."""
    found = ["binary_tensor_data", "sequence", "sequence(string_id)"]
    if settings.admin_key_names:
        found.append("model_repository")
    return found


@router.get("")
async def server_metadata(state: StateDep) -> OrjsonResponse:
    """Server metadata: name, version, extensions."""
    return OrjsonResponse(
        {"name": "seqcast", "version": __version__, "extensions": extensions(state.settings)}
    )


@router.get("/health/live")
async def live() -> OrjsonResponse:
    """Live: the process answers."""
    return OrjsonResponse({"live": True})


@router.get("/health/ready")
async def ready(state: StateDep) -> OrjsonResponse:
    """Ready by the rule of /readyz; 503 with the reasons otherwise."""
    is_ready, body = await readiness(state)
    if is_ready:
        return OrjsonResponse({"ready": True})
    reasons = [
        f"{f['model']}: {f['reason']}" if f["model"] else f["reason"] for f in body["failures"]
    ]
    if body["session_store"] == "unreachable":
        reasons.append("the session store does not answer")
    raise ApiError(503, "not_ready", "not ready: " + "; ".join(reasons))


def _version(raw: str | None) -> int | None:
    return None if raw is None else int_param("version", raw)


def model_metadata(model: LoadedModel, versions: list[int]) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        **tensor_metadata(model),
    }


@router.get("/models/{name}")
async def metadata(name: str, state: StateDep) -> OrjsonResponse:
    """Model metadata of the default (highest) version."""
    return _metadata(state, name, None)


@router.get("/models/{name}/versions/{version}")
async def version_metadata(name: str, version: str, state: StateDep) -> OrjsonResponse:
    """Model metadata of one version."""
    return _metadata(state, name, _version(version))


def _metadata(state: AppState, name: str, version: int | None) -> OrjsonResponse:
    repository = state.repository  # one snapshot for the whole answer
    model = state.find_model(name, version)
    return OrjsonResponse(model_metadata(model, sorted(repository.models[name])))


@router.get("/models/{name}/ready")
async def model_ready(name: str, state: StateDep) -> OrjsonResponse:
    """200 when the model is served (404 otherwise)."""
    state.find_model(name)
    return OrjsonResponse({"name": name, "ready": True})


@router.get("/models/{name}/versions/{version}/ready")
async def version_ready(name: str, version: str, state: StateDep) -> OrjsonResponse:
    """200 when this version is served (404 otherwise)."""
    state.find_model(name, _version(version))
    return OrjsonResponse({"name": name, "ready": True})


async def infer(call: Call) -> Answer:
    """An inference request: stateless over a batch of series, or a step of a sequence."""
    state = call.state
    name, version = call.params["name"], call.params.get("version")
    encoding = call.headers.get(b"content-encoding")
    if encoding is not None and encoding.strip().lower() != b"identity":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Encoding {encoding.decode('latin-1')[:32]!r} is not supported: send "
            "the body uncompressed",
            "Content-Encoding",
        )
    decoded = decode(call.body, call.headers.get(HEADER_LENGTH))
    request = decoded.request
    params = request_params(request.parameters)
    model = state.find_model(name, version)
    check_input_names(decoded.tensors, model)
    head: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()
    if params.sequence is None:
        inputs = series_inputs(decoded.tensors, model, state.limits, params.horizon)
        outputs = await state.runner.run(model, inputs)
        chosen = chosen_outputs(request.outputs, model, params.binary_output)
        tensors = output_tensors(outputs, chosen)
        head = {"model_name": model.name, "model_version": str(model.version)}
    else:
        head, tensors = await _sequence_step(call, decoded, model, params)
        if head["parameters"]["replayed"]:
            headers = (("Seqcast-Replayed", "true"),)
    if request.id is not None:
        head["id"] = request.id
    body, json_length = encode(head, tensors)
    if json_length is None:
        return Answer(body, headers=headers)
    headers += (("Inference-Header-Content-Length", str(json_length)),)
    return Answer(body, headers=headers, media_type=_BINARY)


async def _sequence_step(
    call: Call, decoded: Decoded, model: LoadedModel, params: Params
) -> tuple[dict[str, Any], list[OutputTensor]]:
    state = call.state
    sequence = params.sequence
    assert sequence is not None
    tensors = decoded.tensors
    try:
        result = await step(
            state.sessions,
            call.owner,
            model.name,
            model if sequence.start else None,
            call.params.get("version"),
            sequence,
            values_batch(tensors["values"], model),
            tensors.get("h"),
            tensors.get("c"),
            params.horizon,
        )
    except OffsetConflict as exc:
        raise ApiError(
            409,
            "offset_conflict",
            f"sequence_offset {exc.given} is not where sequence {shown_id(sequence.id)} "
            f"stands: it has consumed {exc.current} values, so its next step has "
            f"sequence_offset {exc.current} (a retry of its last step is answered again)",
            "parameters.sequence_offset",
        ) from None
    except SessionExists:
        raise ApiError(
            409,
            "sequence_exists",
            f"sequence {shown_id(sequence.id)} was started by another request at the same "
            "time; send this one again",
            "parameters.sequence_id",
        ) from None
    # The version the sequence runs on (the default may have changed since it started).
    ran = state.repository.get(result.model, result.version) or model
    one: dict[str, np.ndarray | None] = {
        "forecast": result.forecast,
        "predictions": result.predictions,
        "h": result.h,
        "c": result.c,
    }
    chosen = chosen_outputs(decoded.request.outputs, ran, params.binary_output)
    head = {
        "model_name": result.model,
        "model_version": str(result.version),
        "parameters": {
            "sequence_offset": result.start,
            "sequence_next_offset": result.offset,
            "replayed": result.replayed,
        },
    }
    return head, one_series(one, chosen)


def _infer_routes() -> list[BodyRoute]:
    fields: dict[str, Any] = {
        "request": InferenceRequest,
        "response": InferenceResponse,
        "handler": infer,
        "tags": ("v2",),
        "errors": (400, 404, 409, 413, 415),
        "in_schema": False,
    }
    return [
        BodyRoute(
            path="/v2/models/{name}/infer",
            params={"name": str},
            summary="Open Inference Protocol: infer with the default (highest) version.",
            name="v2_infer",
            **fields,
        ),
        BodyRoute(
            path="/v2/models/{name}/versions/{version}/infer",
            params={"name": str, "version": int},
            summary="Open Inference Protocol: infer with one version.",
            name="v2_infer_version",
            **fields,
        ),
    ]


ROUTES = _infer_routes()
