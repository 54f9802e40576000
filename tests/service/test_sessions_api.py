"""The session API over HTTP, on the in-memory store and on a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.sessions_support import (
    STORES,
    MakeClient,
    as_json,
    assert_state,
    create,
    error_of,
    observe,
    oracle,
    push_concurrently,
    series,
    session_state,
    store_settings,
)

# (model, version it runs on by default, features)
MODELS = [("tiny-rnn", 1, 1), ("tiny-lstm", 2, 1), ("tiny-gru", 1, 1), ("two-in-two-out", 1, 2)]


@pytest.fixture(scope="module", params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


@pytest.fixture(scope="module")
def client(
    make_client: MakeClient, store: str, request: pytest.FixtureRequest
) -> Iterator[TestClient]:
    with make_client(**store_settings(store, request)) as c:
        yield c


def test_create_describes_the_session(client: TestClient) -> None:
    info = create(client, "tiny-lstm")
    assert info["model"] == "tiny-lstm"
    assert info["version"] == 2  # the default (highest) version at creation
    assert info["offset"] == 0
    assert len(info["session"]) >= 16
    assert info["created_at"].endswith("Z")
    assert info["expires_at"] > info["created_at"]
    pinned = create(client, "tiny-lstm", version=1)
    assert pinned["version"] == 1
    got = client.get(f"/v1/sessions/{info['session']}")
    assert got.status_code == 200
    assert {k: got.json()[k] for k in ("session", "model", "version", "offset")} == {
        k: info[k] for k in ("session", "model", "version", "offset")
    }
    assert "state" not in got.json()


@pytest.mark.parametrize(("name", "version", "features"), MODELS)
def test_chunked_steps_equal_one_shot(
    client: TestClient, model_dir: Path, name: str, version: int, features: int
) -> None:
    values = series(23, features)
    preds, h, c = oracle(model_dir, name, version).run(values)
    session = create(client, name)["session"]
    got, offset = [], 0
    for chunk in np.split(values, [1, 8, 9, 17]):
        answer = observe(client, session, chunk, offset)
        assert answer["start"] == offset
        offset += len(chunk)
        assert answer["offset"] == offset
        got.extend(answer["predictions"])
        assert answer["forecast"] == answer["predictions"][-1:]
    expected = preds[:, 0] if features == 1 else preds
    np.testing.assert_allclose(got, expected, atol=1e-5)
    info = session_state(client, session)
    assert info["offset"] == 23
    assert_state(info, h, c)


def test_horizon_rolls_forward_but_state_stays_after_observed(
    client: TestClient, model_dir: Path
) -> None:
    values = series(10)
    session = create(client, "tiny-gru")["session"]
    answer = observe(client, session, values, 0, horizon=4)
    predict = client.post(
        "/v1/models/tiny-gru/predict", json={"series": [{"values": as_json(values), "horizon": 4}]}
    ).json()["series"][0]
    np.testing.assert_allclose(answer["forecast"], predict["forecast"], atol=1e-6)
    assert answer["offset"] == 10
    _, h, _ = oracle(model_dir, "tiny-gru", 1).run(values)
    assert_state(session_state(client, session), h, None)


def test_warm_up_and_initial_state(client: TestClient, model_dir: Path) -> None:
    values = series(30)
    ref = oracle(model_dir, "tiny-lstm", 2)
    preds, h, c = ref.run(values)
    # Warm up on the first 12 values, then continue.
    warm = create(client, "tiny-lstm", {"values": as_json(values[:12])})
    assert warm["offset"] == 12
    answer = observe(client, warm["session"], values[12:], 12)
    np.testing.assert_allclose(answer["predictions"], preds[12:, 0], atol=1e-5)
    assert_state(session_state(client, warm["session"]), h, c)
    # Start from the state a predict answer carried.
    first = client.post(
        "/v1/models/tiny-lstm/predict", json={"series": [{"values": as_json(values[:20])}]}
    ).json()["series"][0]
    seeded = create(client, "tiny-lstm", {"state": first["state"]})
    assert seeded["offset"] == 0
    answer = observe(client, seeded["session"], values[20:], 0)
    np.testing.assert_allclose(answer["predictions"], preds[20:, 0], atol=1e-5)
    assert_state(session_state(client, seeded["session"]), h, c)


def test_retry_of_the_last_step_is_answered_without_advancing(
    client: TestClient, model_dir: Path
) -> None:
    values = series(12)
    session = create(client, "tiny-lstm")["session"]
    observe(client, session, values[:5], 0)
    body = {"values": as_json(values[5:9]), "offset": 5, "horizon": 2}
    first = client.post(f"/v1/sessions/{session}/observe", json=body)
    again = client.post(f"/v1/sessions/{session}/observe", json=body)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert "seqcast-replayed" not in first.headers
    assert again.headers["seqcast-replayed"] == "true"
    assert again.json()["offset"] == 9
    # The state advanced once: continuing gives the one-shot answer.
    answer = observe(client, session, values[9:], 9)
    preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(values)
    np.testing.assert_allclose(answer["predictions"], preds[9:, 0], atol=1e-5)
    assert_state(session_state(client, session), h, c)


@pytest.mark.parametrize(
    ("offset", "values"),
    [
        (0, [1.0]),  # behind: an older step, not the last one
        (3, [9.0, 9.0]),  # the last step's offset but other values
        (7, [1.0]),  # ahead
        (5, [1.0]),  # right after the last step, but the session is further on
    ],
)
def test_wrong_offset_is_409_with_the_current_offset(
    client: TestClient, offset: int, values: list[float]
) -> None:
    session = create(client, "tiny-rnn")["session"]
    observe(client, session, np.ones((3, 1)), 0)
    observe(client, session, np.ones((3, 1)), 3)
    response = client.post(
        f"/v1/sessions/{session}/observe", json={"values": values, "offset": offset}
    )
    error = error_of(response, 409)
    assert error["code"] == "offset_conflict"
    assert error["field"] == "offset"
    assert error["offset"] == 6
    assert "offset 6" in error["message"]
    assert session_state(client, session)["offset"] == 6


def test_delete_and_unknown_sessions(client: TestClient) -> None:
    session = create(client, "tiny-gru")["session"]
    assert client.delete(f"/v1/sessions/{session}").status_code == 204
    for response in (
        client.get(f"/v1/sessions/{session}"),
        client.delete(f"/v1/sessions/{session}"),
        client.post(f"/v1/sessions/{session}/observe", json={"values": [1.0], "offset": 0}),
    ):
        error = error_of(response, 404)
        assert error["code"] == "session_not_found"
        assert error["field"] == "session"
        assert session not in error["message"]  # ids are bearer secrets: never echoed


@pytest.mark.parametrize(
    ("name", "body", "field", "code"),
    [
        ("tiny-rnn", b'{"values": [1.0, NaN], "offset": 0}', "values[1]", "invalid_value"),
        ("tiny-rnn", {"values": [], "offset": 0}, "values", "invalid_value"),
        ("tiny-rnn", {"values": [1.0, "x"], "offset": 0}, "values[1]", "invalid_value"),
        ("tiny-rnn", {"values": [1.0]}, "offset", "missing_field"),
        ("tiny-rnn", {"values": [1.0], "offset": -1}, "offset", "invalid_value"),
        ("tiny-rnn", {"values": [1.0], "offset": 0, "horizon": 0}, "horizon", "invalid_value"),
        ("tiny-rnn", {"values": [1.0], "offset": 0, "horizon": 513}, "horizon", "limit_exceeded"),
        ("tiny-rnn", {"values": [1.0], "offset": 0, "extra": 1}, "extra", "unknown_field"),
        ("two-in-two-out", {"values": [1.0, 2.0], "offset": 0}, "values", "invalid_value"),
        ("two-in-two-out", {"values": [[1.0, 2.0], [1.0]], "offset": 0}, "values[1]", None),
        ("two-in-one-out", {"values": [[1.0, 2.0]], "offset": 0, "horizon": 2}, "horizon", None),
    ],
)
def test_bad_steps_are_422_naming_the_field(
    client: TestClient, name: str, body: object, field: str | None, code: str | None
) -> None:
    session = create(client, name)["session"]
    url = f"/v1/sessions/{session}/observe"
    if isinstance(body, bytes):
        response = client.post(url, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(url, json=body)
    error = error_of(response, 422)
    assert error["field"] == field
    if code is not None:
        assert error["code"] == code
    assert session_state(client, session)["offset"] == 0


@pytest.mark.parametrize(
    ("url", "body", "status", "field"),
    [
        ("/v1/models/nope/sessions", {}, 404, "name"),
        ("/v1/models/tiny-lstm/versions/9/sessions", {}, 404, "version"),
        ("/v1/models/tiny-lstm/sessions", {"values": [1.0, None]}, 422, "values[1]"),
        ("/v1/models/tiny-rnn/sessions", {"state": {"model": "tiny-gru", "version": 1,
                                                    "h": [[0.0] * 5] * 2}}, 422, "state.model"),
        ("/v1/models/tiny-rnn/sessions", {"state": {"model": "tiny-rnn", "version": 1,
                                                    "h": [[0.0] * 5]}}, 422, "state.h"),
        # A state field only other models' states carry (no time column, no differences).
        ("/v1/models/tiny-gru/sessions", {"state": {"model": "tiny-gru", "version": 1,
                                                    "h": [[0.0] * 5] * 2, "time": "2024-01"}},
         422, "state.time"),
        ("/v1/models/tiny-gru/sessions", {"state": {"model": "tiny-gru", "version": 1,
                                                    "h": [[0.0] * 5] * 2, "levels": [1.0]}},
         422, "state.levels"),
    ],
)  # fmt: skip
def test_bad_creations(client: TestClient, url: str, body: object, status: int, field: str) -> None:
    assert error_of(client.post(url, json=body), status)["field"] == field


def test_concurrent_clients_with_correct_offsets_lose_no_update_and_double_no_step(
    client: TestClient, model_dir: Path
) -> None:
    """24 chunks, each sent by two workers at once, all in flight together."""
    values = series(96)
    chunks = np.split(values, range(4, 96, 4))
    session = create(client, "tiny-lstm")["session"]
    answers = push_concurrently([client], session, chunks)
    preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(values)
    assert sorted(answers) == list(range(24))  # every chunk was answered at least once
    for i, bodies in answers.items():
        assert len(set(bodies)) == 1  # both senders of a chunk got the very same answer
        answer = json.loads(bodies[0])
        assert (answer["start"], answer["offset"]) == (4 * i, 4 * i + 4)
        np.testing.assert_allclose(answer["predictions"], preds[4 * i : 4 * i + 4, 0], atol=1e-5)
    info = session_state(client, session)
    assert info["offset"] == 96
    assert_state(info, h, c)


def test_sessions_expire_after_the_idle_ttl(
    make_client: MakeClient, store: str, request: pytest.FixtureRequest
) -> None:
    with make_client(session_ttl_s=0.6, **store_settings(store, request)) as c:
        idle = create(c, "tiny-rnn")["session"]
        busy = create(c, "tiny-rnn")["session"]
        time.sleep(0.35)
        observe(c, busy, np.ones((2, 1)), 0)  # a step refreshes the TTL
        time.sleep(0.35)
        assert error_of(c.get(f"/v1/sessions/{idle}"), 404)["code"] == "session_not_found"
        assert c.get(f"/v1/sessions/{busy}").json()["offset"] == 2


def test_session_on_an_unloaded_version_is_410(
    make_client: MakeClient, store: str, request: pytest.FixtureRequest
) -> None:
    with make_client(**store_settings(store, request)) as c:
        session = create(c, "tiny-lstm", version=1)["session"]
        observe(c, session, np.ones((2, 1)), 0)
        # Unload version 1 from this running service, as a redeploy without it would.
        del c.app_state["seqcast"].repository.models["tiny-lstm"][1]
        error = error_of(
            c.post(f"/v1/sessions/{session}/observe", json={"values": [1.0], "offset": 2}), 410
        )
        assert error["code"] == "version_gone"
        assert "version 1" in error["message"]
        assert "no longer" in error["message"]
        # New sessions take the version still loaded.
        assert create(c, "tiny-lstm")["version"] == 2


def test_memory_store_refuses_sessions_beyond_its_bound(make_client: MakeClient) -> None:
    with make_client(session_store="memory", session_max=2) as c:
        first = create(c, "tiny-rnn")["session"]
        create(c, "tiny-rnn")
        response = c.post("/v1/models/tiny-rnn/sessions")
        error = error_of(response, 503)
        assert error["code"] == "session_store_full"
        assert "maximum of 2" in error["message"]
        assert response.headers["retry-after"]
        # Closing one makes room.
        assert c.delete(f"/v1/sessions/{first}").status_code == 204
        create(c, "tiny-rnn")


def test_fast_path_and_fastapi_route_answer_observe_alike(make_client: MakeClient) -> None:
    """Observe is served ahead of FastAPI's routing; both ways give the same answers."""
    transcripts = []
    for fast in (True, False):
        with make_client(fast_path=fast, max_body_bytes=1024) as c:
            session = create(c, "tiny-lstm")["session"]
            url = f"/v1/sessions/{session}/observe"
            steps = [
                {"values": [0.5, 1.5], "offset": 0, "horizon": 2},
                {"values": [0.5, 1.5], "offset": 0, "horizon": 2},  # replayed
                {"values": [1.0], "offset": 7},  # 409
                {"values": [1.0, "x"], "offset": 2},  # 422
                {"values": [1.0] * 300, "offset": 2},  # 413
            ]
            transcript = []
            for step in steps:
                r = c.post(url, json=step)
                body = r.json()
                body.get("error", body).pop("session", None)
                if "error" in body:
                    body["error"]["message"] = body["error"]["message"].replace(session, "ID")
                transcript.append((r.status_code, r.headers.get("seqcast-replayed"), body))
            missing = c.post("/v1/sessions/nope/observe", json=steps[0])
            transcript.append((missing.status_code, None, missing.json()))
            transcripts.append(transcript)
    assert transcripts[0] == transcripts[1]
    assert [t[0] for t in transcripts[0]] == [200, 200, 409, 422, 413, 404]
    assert [t[1] for t in transcripts[0]][:2] == [None, "true"]
