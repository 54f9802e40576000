"""The WebSocket stream: observation frames in, prediction frames out, over one session.

Frames are JSON text. The server's first frame describes the session (as
GET /v1/sessions/{id} does); then each client frame
``{"values": [...], "offset": n?, "horizon": h?}`` gets one answer, either the
observe answer of the session API or an error in the API's error shape. A bad
frame gets an error frame and the connection stays open.

Back-pressure: one frame is handled at a time and the next is not read until
the answer is sent. A client that stops reading makes the server's send wait,
the server then stops reading, and TCP pushes back on the client: nothing
queues without bound in the server.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from service.api.body import too_large
from service.api.body_routes import int_param, parse_body
from service.api.encoding import observe_json
from service.api.errors import ApiError, as_api_error, error_json
from service.api.routes.sessions import checked_id, session_info
from service.api.session_schemas import StreamFrame
from service.api.state import AppState, app_state, owner_of
from service.inputs import InputError, check_intervals, shown
from service.redaction import session_tag
from service.runner import Overloaded
from service.sessions.manager import SessionError, SessionNotFound, VersionGone
from service.sessions.record import SessionRecord
from service.sessions.store import SessionStoreError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["sessions"])

_KNOWN_ERRORS = (SessionError, SessionStoreError, InputError, ApiError, Overloaded)
# WebSocket close codes: 1008 policy violation (no such session), 1013 try again later.
_CLOSE_FOR_STATUS = {429: 1013, 503: 1013}
# Offered by browsers that send their key as a subprotocol (service.api.auth).
SUBPROTOCOL = "seqcast"


async def _open(websocket: WebSocket, state: AppState, name: str, owner: str) -> SessionRecord:
    query = websocket.query_params
    session = query.get("session")
    if session is None:
        version = query.get("version")
        model = state.find_model(
            name, int_param("version", version) if version is not None else None
        )
        return await state.sessions.create(model, owner)
    record = await state.sessions.get(checked_id(session), owner)
    if record.model != name:
        raise ApiError(
            422,
            "session_mismatch",
            f"the session runs on model {record.model!r}, not {shown(name)!r}",
            "session",
        )
    state.sessions.model_of(record)  # 410 now rather than at the first frame
    return record


@router.websocket("/models/{name}/stream")
async def stream(websocket: WebSocket, name: str) -> None:
    """Observation frames in, prediction frames out; ?session=<id> resumes a session."""
    state = app_state(websocket.scope)
    owner = owner_of(websocket.scope)
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    try:
        try:
            record = await _open(websocket, state, name, owner)
        except _KNOWN_ERRORS as exc:
            err = as_api_error(exc)
            assert err is not None
            await websocket.send_text(error_json(err).decode())
            await websocket.close(code=_CLOSE_FOR_STATUS.get(err.status, 1008), reason=err.code)
            return
        await websocket.send_text(orjson.dumps(session_info(state.sessions, record)).decode())
        tag = session_tag(record.id)
        log.info("stream on session %s opened at offset %d", tag, record.offset)
        offset = await _serve_frames(websocket, state, record, owner)
        log.info("stream on session %s ended at offset %d", tag, offset)
    except WebSocketDisconnect:
        # The client went away while an answer was on its way; the session stays.
        log.info("stream client disconnected before its answer was sent")


async def _serve_frames(
    websocket: WebSocket, state: AppState, record: SessionRecord, owner: str
) -> int:
    """Answer frames one at a time until the client closes; returns the offset reached."""
    limit = state.settings.max_body_bytes
    expected = record.offset
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return expected
        text = message.get("text")
        raw: bytes = text.encode() if text is not None else (message.get("bytes") or b"")
        try:
            if len(raw) > limit:
                raise too_large(limit, "frame")
            frame = parse_body(StreamFrame, raw)
            offset = expected if frame.offset is None else frame.offset
            model = None
            if frame.intervals:  # checked before the step, which must not apply if refused
                model = state.sessions.model_of(record)
                check_intervals(frame.intervals, frame.horizon, model, "intervals")
            step = await state.sessions.observe(
                record.id, owner, offset, frame.values, frame.horizon
            )
        except _KNOWN_ERRORS as exc:
            err = as_api_error(exc)
            assert err is not None
            await websocket.send_text(error_json(err).decode())
            if isinstance(exc, SessionNotFound | VersionGone):
                # The session cannot take another step: end the stream.
                await websocket.close(code=1008, reason=err.code)
                return expected
            continue
        expected = step.offset
        await websocket.send_text(observe_json(step, model, frame.intervals).decode())
