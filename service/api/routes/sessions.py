"""Server-held sessions: create, observe (exactly once per offset), describe, delete."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from service.api.body_routes import Answer, BodyRoute, Call, model_routes, parse_body
from service.api.encoding import OrjsonResponse, observe_json, state_json
from service.api.schemas import ErrorResponse
from service.api.session_schemas import (
    CreateSessionRequest,
    ObserveRequest,
    ObserveResponse,
    SessionInfo,
)
from service.api.state import OwnerDep, StateDep
from service.calendar import position, state_time, timed_values
from service.inputs import (
    check_domain,
    check_intervals,
    levels_array,
    scale_array,
    state_arrays,
    values_array,
)
from service.repository import LoadedModel
from service.sessions.manager import SessionManager, SessionNotFound
from service.sessions.record import (
    SessionRecord,
    unpack_h,
    unpack_scale,
    unpack_state,
    unpack_time,
)

router = APIRouter(prefix="/v1", tags=["sessions"])

# Ids are 22 URL-safe characters; anything else cannot name a session.
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
SessionId = Annotated[
    str, Path(max_length=128, pattern=SESSION_ID.pattern, description="session id")
]


def checked_id(session_id: str) -> str:
    """The id as given, or SessionNotFound when it cannot be one."""
    if not SESSION_ID.match(session_id):
        raise SessionNotFound(session_id)
    return session_id


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse} for code in codes}


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
        h, levels = unpack_h(record.h, model)
        c = unpack_state(record.c, model.state_shape) if record.c is not None else None
        time, scale = unpack_time(record.h, model), unpack_scale(record.h, model)
        info["state"] = state_json(model, h, c, levels, time, scale)
    return info


async def create(call: Call) -> Answer:
    """Start a session: from zeros or a given state, optionally after warm-up values."""
    state = call.state
    model = state.find_model(call.params["name"], call.params.get("version"))
    body = parse_body(CreateSessionRequest, call.body, empty_ok=True)
    warmup = values_array(body.values, model, state.limits, "values") if body.values else None
    h, c = state_arrays(body.state, model, "state")
    levels = None
    if model.transformed:
        if warmup is not None:
            check_domain(warmup, model, "values")
        levels = levels_array(body.state, model, "state")
    time = None
    if model.timed or body.timestamp is not None:
        warmup, time = _timed_warmup(model, warmup, body)
    scale = scale_array(body.state, model, "state")
    record = await state.sessions.create(model, call.owner, warmup, h, c, levels, time, scale)
    info = orjson.dumps(session_info(state.sessions, record))
    return Answer(info, status=201, headers=(("Location", f"/v1/sessions/{record.id}"),))


def _timed_warmup(
    model: LoadedModel, warmup: np.ndarray | None, body: CreateSessionRequest
) -> tuple[np.ndarray | None, int | None]:
    """The warm-up values with their calendar inputs, and the session's grid position."""
    last = state_time(body.state, model, "state")
    if warmup is not None:
        timed = timed_values(model, warmup, 1, body.timestamp, last, "timestamp")
        return timed.values, timed.last
    if body.timestamp is None:
        return None, last
    spec = model.manifest.time
    if spec is None:
        timed_values(model, np.empty((0, 1)), 1, body.timestamp, None, "timestamp")  # refuses
        return None, None
    first = position(spec, body.timestamp, "timestamp")
    if last is not None and first != last + 1:
        timed_values(model, np.empty((0, 1)), 1, body.timestamp, last, "timestamp")  # refuses
    return None, first - 1


async def observe(call: Call) -> Answer:
    """Feed the next values at their offset; a retry of the last step gets the same answer."""
    session_id = checked_id(call.params["session_id"])
    body = parse_body(ObserveRequest, call.body)
    sessions = call.state.sessions
    model = None
    if body.intervals:  # checked before the step, which must not apply if refused
        model = sessions.model_of(await sessions.get(session_id, call.owner))
        check_intervals(body.intervals, body.horizon, model, "intervals")
    step = await sessions.observe(
        session_id, call.owner, body.offset, body.values, body.horizon, body.timestamp
    )
    return Answer(
        observe_json(step, model, body.intervals),
        headers=(("Seqcast-Replayed", "true"),) if step.replayed else (),
    )


ROUTES = [
    *model_routes(
        "sessions",
        "Start a session on {which} of a model.",
        request=CreateSessionRequest,
        response=SessionInfo,
        handler=create,
        tags=("sessions",),
        status_code=201,
        errors=(404, 413, 415, 422, 429, 503),
        body_required=False,
    ),
    BodyRoute(
        path="/v1/sessions/{session_id}/observe",
        params={"session_id": SessionId},
        request=ObserveRequest,
        response=ObserveResponse,
        handler=observe,
        summary="Feed the next values at their offset; a retry of the last step gets the "
        "same answer.",
        tags=("sessions",),
        errors=(404, 409, 410, 413, 415, 422, 503),
        name="observe",
    ),
]


@router.get("/sessions/{session_id}", response_model=SessionInfo, responses=_errors(404, 410, 503))
async def describe_session(
    session_id: SessionId,
    state: StateDep,
    owner: OwnerDep,
    with_state: Annotated[
        bool, Query(alias="state", description="include the current state")
    ] = False,
) -> OrjsonResponse:
    """Where a session stands: model, version, offset, times, and its state when asked."""
    record = await state.sessions.get(checked_id(session_id), owner)
    return OrjsonResponse(session_info(state.sessions, record, with_state=with_state))


@router.delete("/sessions/{session_id}", status_code=204, responses=_errors(404, 503))
async def delete_session(session_id: SessionId, state: StateDep, owner: OwnerDep) -> Response:
    """End a session and forget its state."""
    await state.sessions.delete(checked_id(session_id), owner)
    return Response(status_code=204)
