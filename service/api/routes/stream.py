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
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, WebSocket
from starlette.websockets import WebSocketDisconnect

from service.api.deps import find_model
from service.api.errors import ApiError, error_body
from service.api.routes.sessions import api_error, parse_body, session_info, step_preparer
from service.api.session_schemas import StreamFrame
from service.inference import InferenceInputError
from service.repository import ModelRepository
from service.sessions.manager import SessionError, SessionManager, SessionNotFound, VersionGone
from service.sessions.record import SessionRecord
from service.sessions.store import StoreFull, StoreUnavailable
from service.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["sessions"])

_SESSION_ERRORS = (SessionError, StoreUnavailable, StoreFull, InferenceInputError, ApiError)
# WebSocket close codes: 1008 policy violation (no such session), 1011 server error,
# 1013 try again later (store unreachable).
_CLOSE_FOR_STATUS = {404: 1008, 410: 1008, 422: 1008, 503: 1013}


async def _send_error(websocket: WebSocket, err: ApiError) -> None:
    body = error_body(err.status, err.code, err.message, err.field, err.extra)
    await websocket.send_text(orjson.dumps(body).decode())


async def _open(
    websocket: WebSocket, name: str, session: str | None, version: int | None
) -> SessionRecord:
    sessions: SessionManager = websocket.state.sessions
    repository: ModelRepository = websocket.state.repository
    if session is None:
        return await sessions.create(find_model(repository, name, version))
    record = await sessions.get(session)
    if record.model != name:
        raise ApiError(
            422,
            "session_mismatch",
            f"session {session!r} runs on model {record.model!r}, not {name!r}",
            "session",
        )
    sessions.model_of(record)  # 410 now rather than at the first frame
    return record


@router.websocket("/models/{name}/stream")
async def stream(
    websocket: WebSocket,
    name: str,
    session: Annotated[str | None, Query(max_length=128)] = None,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> None:
    """Observation frames in, prediction frames out; ?session=<id> resumes a session."""
    sessions: SessionManager = websocket.state.sessions
    await websocket.accept()
    try:
        try:
            record = await _open(websocket, name, session, version)
        except _SESSION_ERRORS as exc:
            err = api_error(exc)
            await _send_error(websocket, err)
            await websocket.close(code=_CLOSE_FOR_STATUS.get(err.status, 1008), reason=err.code)
            return
        await websocket.send_text(orjson.dumps(session_info(sessions, record)).decode())
        log.info("stream on session %s opened at offset %d", record.id, record.offset)
        offset = await _serve_frames(websocket, record)
        log.info("stream on session %s ended at offset %d", record.id, offset)
    except WebSocketDisconnect:
        # The client went away while an answer was on its way; the session stays.
        log.info("stream client disconnected before its answer was sent")


async def _serve_frames(websocket: WebSocket, record: SessionRecord) -> int:
    """Answer frames one at a time until the client closes; returns the offset reached."""
    sessions: SessionManager = websocket.state.sessions
    settings: Settings = websocket.state.settings
    expected = record.offset
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return expected
        text = message.get("text")
        raw: bytes = text.encode() if text is not None else (message.get("bytes") or b"")
        if len(raw) > settings.max_body_bytes:
            await _send_error(
                websocket,
                ApiError(
                    413,
                    "body_too_large",
                    f"frame is larger than the limit max_body_bytes={settings.max_body_bytes}",
                ),
            )
            continue
        try:
            frame = parse_body(StreamFrame, raw)
            offset = expected if frame.offset is None else frame.offset
            prepare = step_preparer(frame.values, frame.horizon, settings)
            result = await sessions.observe(record.id, offset, prepare, frame.horizon)
        except _SESSION_ERRORS as exc:
            err = api_error(exc)
            await _send_error(websocket, err)
            if isinstance(exc, SessionNotFound | VersionGone):
                # The session cannot take another step: end the stream.
                await websocket.close(code=_CLOSE_FOR_STATUS[err.status], reason=err.code)
                return expected
            continue
        expected = result.offset
        await websocket.send_text(result.body.decode())
