"""The WebSocket stream /v1/models/{name}/stream, on both session stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from service.app import create_app
from service.settings import Settings
from tests.service.sessions_support import (
    STORES,
    MakeClient,
    as_json,
    assert_state,
    create,
    observe,
    oracle,
    series,
    session_state,
    store_settings,
)


@pytest.fixture(scope="module", params=STORES)
def client(make_client: MakeClient, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    with make_client(max_body_bytes=4096, **store_settings(request.param, request)) as c:
        yield c


def frame(ws: WebSocketTestSession, body: dict[str, Any]) -> dict[str, Any]:
    ws.send_text(json.dumps(body))
    answer: dict[str, Any] = json.loads(ws.receive_text())
    return answer


@pytest.mark.parametrize(("name", "version"), [("tiny-lstm", 2), ("two-in-two-out", 1)])
def test_stream_gives_the_same_answers_as_the_session_api(
    client: TestClient, model_dir: Path, name: str, version: int
) -> None:
    features = 2 if name == "two-in-two-out" else 1
    values = series(25, features, seed=8)
    chunks = np.split(values, [3, 4, 12, 20])
    session = create(client, name)["session"]
    api_answers = []
    offset = 0
    for chunk in chunks:
        api_answers.append(observe(client, session, chunk, offset, horizon=2))
        offset += len(chunk)
    with client.websocket_connect(f"/v1/models/{name}/stream") as ws:
        hello = json.loads(ws.receive_text())
        assert (hello["model"], hello["version"], hello["offset"]) == (name, version, 0)
        for chunk, expected in zip(chunks, api_answers, strict=True):
            got = frame(ws, {"values": as_json(chunk), "horizon": 2})
            assert got["session"] == hello["session"]
            for key in ("start", "offset", "model", "version"):
                assert got[key] == expected[key]
            np.testing.assert_allclose(got["predictions"], expected["predictions"], atol=1e-6)
            np.testing.assert_allclose(got["forecast"], expected["forecast"], atol=1e-6)
    # The stream's session outlives the connection and holds the one-shot state.
    _, h, c = oracle(model_dir, name, version).run(values)
    info = session_state(client, hello["session"])
    assert info["offset"] == 25
    assert_state(info, h, c)


def test_stream_resumes_a_session_and_tracks_offsets(client: TestClient, model_dir: Path) -> None:
    values = series(16, seed=9)
    preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(values)
    session = create(client, "tiny-lstm", {"values": as_json(values[:4])})["session"]
    got: list[float] = []
    with client.websocket_connect(f"/v1/models/tiny-lstm/stream?session={session}") as ws:
        assert json.loads(ws.receive_text())["offset"] == 4
        got += frame(ws, {"values": as_json(values[4:8])})["predictions"]
        got += frame(ws, {"values": as_json(values[8:10]), "offset": 8})["predictions"]
    # Another writer moves the session; a resumed stream starts where it stands.
    got += observe(client, session, values[10:12], 10)["predictions"]
    with client.websocket_connect(f"/v1/models/tiny-lstm/stream?session={session}") as ws:
        assert json.loads(ws.receive_text())["offset"] == 12
        got += frame(ws, {"values": as_json(values[12:])})["predictions"]
    np.testing.assert_allclose(got, preds[4:, 0], atol=1e-5)
    assert_state(session_state(client, session), h, c)


def test_a_repeated_frame_is_answered_once(client: TestClient) -> None:
    with client.websocket_connect("/v1/models/tiny-gru/stream") as ws:
        session = json.loads(ws.receive_text())["session"]
        step = {"values": [0.5, 0.25], "offset": 0}
        first = frame(ws, step)
        assert frame(ws, step) == first
        assert frame(ws, {"values": [1.0]})["start"] == 2
    assert client.get(f"/v1/sessions/{session}").json()["offset"] == 3


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        ("not json", 422, None),
        ("[1, 2]", 422, None),
        ('{"values": []}', 422, "values"),
        ('{"values": [1.0, NaN]}', 422, "values[1]"),
        ('{"values": [1.0, "a"]}', 422, "values[1]"),
        ('{"values": [[1.0, 2.0]]}', 422, "values[0]"),
        ('{"values": [1.0], "horizon": 9999}', 422, "horizon"),
        ('{"values": [1.0], "bogus": true}', 422, "bogus"),
        ('{"values": [1.0], "offset": 5}', 409, "offset"),
        ('{"values": [' + "1.0, " * 1000 + "1.0]}", 413, None),
    ],
)
def test_a_malformed_frame_gets_an_error_frame_and_the_stream_goes_on(
    client: TestClient, raw: str, status: int, field: str | None
) -> None:
    with client.websocket_connect("/v1/models/tiny-rnn/stream") as ws:
        json.loads(ws.receive_text())
        ws.send_text(raw)
        error = json.loads(ws.receive_text())["error"]
        assert error["status"] == status
        assert error["field"] == field
        if status == 409:
            assert error["offset"] == 0
        # Still open, still at offset 0.
        answer = frame(ws, {"values": [0.1, 0.2]})
        assert (answer["start"], answer["offset"]) == (0, 2)


def test_frames_are_answered_one_at_a_time_in_order(client: TestClient) -> None:
    values = series(40, seed=10)
    with client.websocket_connect("/v1/models/tiny-lstm/stream") as ws:
        json.loads(ws.receive_text())
        for k in range(40):  # all sent before any answer is read
            ws.send_text(json.dumps({"values": [values[k, 0]]}))
        answers = [json.loads(ws.receive_text()) for _ in range(40)]
    assert [a["start"] for a in answers] == list(range(40))


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("/v1/models/tiny-rnn/stream?session=nope", 404, "session_not_found"),
        ("/v1/models/nope/stream", 404, "model_not_found"),
        ("/v1/models/tiny-lstm/stream?version=7", 404, "version_not_found"),
    ],
)
def test_a_stream_that_cannot_open_sends_an_error_and_closes(
    client: TestClient, url: str, status: int, code: str
) -> None:
    with client.websocket_connect(url) as ws:
        error = json.loads(ws.receive_text())["error"]
        assert (error["status"], error["code"]) == (status, code)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == 1008


def test_resuming_another_models_session_is_refused(client: TestClient) -> None:
    session = create(client, "tiny-gru")["session"]
    with client.websocket_connect(f"/v1/models/tiny-rnn/stream?session={session}") as ws:
        error = json.loads(ws.receive_text())["error"]
        assert error["code"] == "session_mismatch"
        assert "'tiny-gru'" in error["message"]


def test_a_session_deleted_under_the_stream_ends_it(client: TestClient) -> None:
    with client.websocket_connect("/v1/models/tiny-rnn/stream?version=1") as ws:
        session = json.loads(ws.receive_text())["session"]
        assert client.delete(f"/v1/sessions/{session}").status_code == 204
        ws.send_text(json.dumps({"values": [1.0]}))
        assert json.loads(ws.receive_text())["error"]["code"] == "session_not_found"
        with pytest.raises(WebSocketDisconnect):
            ws.receive_text()


@pytest.mark.anyio
async def test_no_frame_is_read_while_an_answer_waits_to_be_sent(model_dir: Path) -> None:
    """A reader that stops reading stops the server reading: the back-pressure contract.

    Driven at the ASGI level: the server's send of the first answer blocks (as it
    does when the client's socket is full), and the app must not ask for the next
    frame until that send returns.
    """
    app = create_app(Settings(model_dir=model_dir))
    frames = [json.dumps({"values": [float(k)]}) for k in range(3)]
    received: list[str] = []
    sent: list[dict[str, Any]] = []
    unblock = anyio.Event()

    async def receive() -> dict[str, Any]:
        if not received:
            received.append("connect")
            return {"type": "websocket.connect"}
        if len(received) <= len(frames):
            received.append("frame")
            return {"type": "websocket.receive", "text": frames[len(received) - 2]}
        await unblock.wait()  # after the last frame the client just goes away
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        answers = [m for m in sent if m["type"] == "websocket.send"]
        if len(answers) == 2:  # the hello frame, then the first answer: hold it
            await unblock.wait()

    async with app.app.router.lifespan_context(app.app) as state:
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": "/v1/models/tiny-rnn/stream",
            "raw_path": b"/v1/models/tiny-rnn/stream",
            "query_string": b"",
            "headers": [],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "subprotocols": [],
            "state": dict(state or {}),
        }
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, scope, receive, send)
            await anyio.sleep(0.3)
            # Connect and the first frame were read; the second waits behind the send.
            assert received == ["connect", "frame"]
            unblock.set()
    answers = [json.loads(m["text"]) for m in sent if m["type"] == "websocket.send"]
    assert [a.get("start") for a in answers[1:]] == [0, 1, 2]
    assert received == ["connect", "frame", "frame", "frame"]
