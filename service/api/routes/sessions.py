"""Server-held sessions: create, observe (exactly once per offset), describe, delete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from service.api.deps import find_model
from service.api.encoding import OrjsonResponse, state_json
from service.api.errors import ApiError, from_validation_errors
from service.api.parsing import state_arrays, values_array
from service.api.schemas import ErrorResponse, Values
from service.api.session_schemas import (
    CreateSessionRequest,
    ObserveRequest,
    ObserveResponse,
    SessionInfo,
)
from service.inference import InferenceInputError
from service.repository import LoadedModel, ModelRepository
from service.sessions.manager import (
    OffsetConflict,
    Prepare,
    SessionError,
    SessionManager,
    SessionNotFound,
    StepResult,
    VersionGone,
)
from service.sessions.record import SessionRecord, unpack_state
from service.sessions.store import StoreFull, StoreUnavailable
from service.settings import Settings

router = APIRouter(prefix="/v1", tags=["sessions"])

_Body = TypeVar("_Body", bound=BaseModel)
# Ids are 22 URL-safe characters; the bound keeps junk out of store keys and logs.
SessionId = Annotated[str, Path(max_length=128, description="session id")]


def sessions_of(request: Request) -> SessionManager:
    # Read from the lifespan state directly rather than through Depends: dependency
    # resolution costs more per request than the rest of a small step's routing.
    sessions: SessionManager = request.state.sessions
    return sessions


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


def _body(schema: str, *, required: bool = True) -> dict[str, Any]:
    # Bodies are validated by hand from the raw bytes (pydantic's Rust JSON path), so
    # OpenAPI is told their schema here; the app factory adds it to the components.
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref}}}}


def parse_body(kind: type[_Body], body: bytes, *, empty_ok: bool = False) -> _Body:
    """Validate raw JSON in pydantic's Rust path, or raise a 422 naming the field."""
    if not body.strip():
        if empty_ok:
            return kind()
        raise ApiError(422, "invalid_json", "the request body is empty; send a JSON object")
    try:
        return kind.model_validate_json(body)
    except ValidationError as exc:
        raise from_validation_errors(exc.errors()) from None


def api_error(exc: Exception) -> ApiError:
    """The answer for an error from the session layer (also used for stream error frames)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, OffsetConflict):
        return ApiError(409, "offset_conflict", str(exc), "offset", extra={"offset": exc.current})
    if isinstance(exc, SessionNotFound):
        return ApiError(404, "session_not_found", str(exc), "session")
    if isinstance(exc, VersionGone):
        return ApiError(410, "version_gone", str(exc), "session")
    if isinstance(exc, StoreUnavailable):
        return ApiError(503, "session_store_unavailable", str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, StoreFull):
        return ApiError(503, "session_store_full", str(exc), headers={"Retry-After": "5"})
    if isinstance(exc, InferenceInputError):
        field = f"values[{exc.index}]" if exc.index is not None else "horizon"
        return ApiError(422, "invalid_value", f"{field}: {exc}", field)
    raise exc


def step_preparer(values: Values, horizon: int, settings: Settings) -> Prepare:
    """Checks a step's values and horizon against the session's model, once it is known."""

    def prepare(model: LoadedModel) -> np.ndarray:
        if horizon > settings.max_horizon:
            raise ApiError(
                422,
                "limit_exceeded",
                f"horizon is {horizon}, over the limit max_horizon={settings.max_horizon}",
                "horizon",
            )
        if horizon > 1 and not model.manifest.can_roll_out:
            raise ApiError(
                422,
                "invalid_value",
                f"horizon must be 1 for model {model.name!r}: its targets are not its "
                "features, so it cannot roll forward on its own predictions",
                "horizon",
            )
        return values_array(values, model, settings, "values")

    return prepare


def _time(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def session_info(
    sessions: SessionManager, record: SessionRecord, *, with_state: bool = False
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "session": record.id,
        "model": record.model,
        "version": record.version,
        "offset": record.offset,
        "created_at": _time(record.created_at),
        "updated_at": _time(record.updated_at),
        "expires_at": _time(record.updated_at + sessions.store.ttl_s),
    }
    if with_state:
        model = sessions.model_of(record)
        h = unpack_state(record.h, model.state_shape)
        c = unpack_state(record.c, model.state_shape) if record.c is not None else None
        info["state"] = state_json(model, h, c)
    return info


async def _create(request: Request, name: str, version: int | None) -> OrjsonResponse:
    sessions = sessions_of(request)
    repository: ModelRepository = request.state.repository
    settings: Settings = request.state.settings
    model = find_model(repository, name, version)
    body = parse_body(CreateSessionRequest, await request.body(), empty_ok=True)
    warmup = values_array(body.values, model, settings, "values") if body.values else None
    h, c = state_arrays(body.state, model, "state")
    try:
        record = await sessions.create(model, warmup, h, c)
    except (SessionError, StoreUnavailable, StoreFull, InferenceInputError) as exc:
        raise api_error(exc) from None
    info = session_info(sessions, record)
    return OrjsonResponse(info, status_code=201, headers={"Location": f"/v1/sessions/{record.id}"})


@router.post(
    "/models/{name}/sessions",
    status_code=201,
    response_model=SessionInfo,
    responses=_errors(404, 413, 422, 503),
    openapi_extra=_body("CreateSessionRequest", required=False),
)
async def create_session(name: str, request: Request) -> OrjsonResponse:
    """Start a session on the default (highest) version of a model."""
    return await _create(request, name, None)


@router.post(
    "/models/{name}/versions/{version}/sessions",
    status_code=201,
    response_model=SessionInfo,
    responses=_errors(404, 413, 422, 503),
    openapi_extra=_body("CreateSessionRequest", required=False),
)
async def create_session_version(name: str, version: int, request: Request) -> OrjsonResponse:
    """Start a session on one version of a model."""
    return await _create(request, name, version)


@router.post(
    "/sessions/{session_id}/observe",
    response_model=ObserveResponse,
    responses=_errors(404, 409, 410, 413, 422, 503),
    openapi_extra=_body("ObserveRequest"),
)
async def observe(session_id: SessionId, request: Request) -> Response:
    """Feed the next values at their offset; a retry of the last step gets the same answer."""
    result = await answer_observe(
        sessions_of(request), request.state.settings, session_id, await request.body()
    )
    headers = {"Seqcast-Replayed": "true"} if result.replayed else None
    return Response(result.body, media_type="application/json", headers=headers)


async def answer_observe(
    sessions: SessionManager, settings: Settings, session_id: str, raw: bytes
) -> StepResult:
    """One observe from raw body bytes to its answer, or an ApiError (route and fast path)."""
    body = parse_body(ObserveRequest, raw)
    prepare = step_preparer(body.values, body.horizon, settings)
    try:
        return await sessions.observe(session_id, body.offset, prepare, body.horizon)
    except (SessionError, StoreUnavailable, InferenceInputError) as exc:
        raise api_error(exc) from None


@router.get("/sessions/{session_id}", response_model=SessionInfo, responses=_errors(404, 410, 503))
async def describe_session(
    session_id: SessionId,
    request: Request,
    state: Annotated[bool, Query(description="include the current state")] = False,
) -> OrjsonResponse:
    """Where a session stands: model, version, offset, times, and its state when asked."""
    sessions = sessions_of(request)
    try:
        record = await sessions.get(session_id)
        return OrjsonResponse(session_info(sessions, record, with_state=state))
    except (SessionError, StoreUnavailable) as exc:
        raise api_error(exc) from None


@router.delete("/sessions/{session_id}", status_code=204, responses=_errors(404, 503))
async def delete_session(session_id: SessionId, request: Request) -> Response:
    """End a session and forget its state."""
    sessions = sessions_of(request)
    try:
        await sessions.delete(session_id)
    except (SessionError, StoreUnavailable) as exc:
        raise api_error(exc) from None
    return Response(status_code=204)
