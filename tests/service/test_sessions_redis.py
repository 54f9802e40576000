"""Sessions shared through one real Redis by several service instances (replicas)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.modelkit import write_model
from tests.redis_fixture import RedisServer
from tests.service.sessions_support import (
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
)


@pytest.mark.parametrize(("name", "version"), [("tiny-rnn", 1), ("tiny-lstm", 2), ("tiny-gru", 1)])
def test_stream_alternating_between_two_instances_equals_one_shot(
    make_client: MakeClient, redis_server: RedisServer, model_dir: Path, name: str, version: int
) -> None:
    values = series(40, seed=3)
    preds, h, c = oracle(model_dir, name, version).run(values)
    redis = {"session_store": "redis", "redis_url": redis_server.url}
    with make_client(**redis) as a, make_client(**redis) as b:
        replicas = [a, b]
        session = create(a, name)["session"]
        got, offset = [], 0
        for k, chunk in enumerate(np.array_split(values, 10)):
            answer = observe(replicas[k % 2], session, chunk, offset, horizon=3)
            offset = answer["offset"]
            got.extend(answer["predictions"])
        np.testing.assert_allclose(got, preds[:, 0], atol=1e-5)
        # The last forecast equals the predict endpoint over all values at once.
        one_shot = a.post(
            f"/v1/models/{name}/predict",
            json={"series": [{"values": as_json(values), "horizon": 3}]},
        ).json()["series"][0]
        np.testing.assert_allclose(answer["forecast"], one_shot["forecast"], atol=1e-5)
        for replica in replicas:
            info = session_state(replica, session)
            assert info["offset"] == 40
            assert_state(info, h, c)
            np.testing.assert_allclose(info["state"]["h"], one_shot["state"]["h"], atol=1e-5)


def test_a_replica_going_away_loses_nothing(
    make_client: MakeClient, redis_server: RedisServer, model_dir: Path
) -> None:
    values = series(20, seed=4)
    preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(values)
    redis = {"session_store": "redis", "redis_url": redis_server.url}
    with make_client(**redis) as a:
        session = create(a, "tiny-lstm")["session"]
        first = observe(a, session, values[:11], 0)
    with make_client(**redis) as b:  # a fresh replica, after the first one stopped
        second = observe(b, session, values[11:], 11)
        assert_state(session_state(b, session), h, c)
    np.testing.assert_allclose(first["predictions"] + second["predictions"], preds[:, 0], atol=1e-5)


def test_concurrent_steps_through_two_replicas_apply_each_step_once(
    make_client: MakeClient, redis_server: RedisServer, model_dir: Path
) -> None:
    """Per-process locks do not span replicas: here only Redis's compare-and-advance does."""
    values = series(90, seed=5)
    chunks = np.split(values, range(3, 90, 3))  # 30 chunks of 3
    redis = {"session_store": "redis", "redis_url": redis_server.url}
    with make_client(**redis) as a, make_client(**redis) as b:
        session = create(a, "tiny-gru")["session"]
        answers = push_concurrently([a, b], session, chunks, senders_per_chunk=2)
        preds, h, _ = oracle(model_dir, "tiny-gru", 1).run(values)
        assert sorted(answers) == list(range(30))
        for i, bodies in answers.items():
            assert len(set(bodies)) == 1
            np.testing.assert_allclose(
                json.loads(bodies[0])["predictions"], preds[3 * i : 3 * i + 3, 0], atol=1e-5
            )
        info = session_state(b, session)
        assert info["offset"] == 90
        assert_state(info, h, None)


def test_redis_restart_mid_stream_answers_503_then_the_stream_continues(
    make_client: MakeClient, own_redis_server: RedisServer, model_dir: Path
) -> None:
    values = series(30, seed=6)
    preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(values)
    settings = {
        "session_store": "redis",
        "redis_url": own_redis_server.url,
        "redis_timeout_s": 0.5,
    }
    with make_client(**settings) as app:
        session = create(app, "tiny-lstm")["session"]
        got = observe(app, session, values[:10], 0)["predictions"]
        own_redis_server.stop()
        step = {"values": as_json(values[10:20]), "offset": 10}
        for response in (
            app.post(f"/v1/sessions/{session}/observe", json=step),
            app.get(f"/v1/sessions/{session}"),
            app.post("/v1/models/tiny-lstm/sessions"),
        ):
            error = error_of(response, 503)
            assert error["code"] == "session_store_unavailable"
            assert error["message"] == "session store unavailable"
            assert response.headers["retry-after"] == "1"
        # Stateless predict does not need Redis.
        assert app.post(
            "/v1/models/tiny-lstm/predict", json={"series": [{"values": [1.0]}]}
        ).is_success
        own_redis_server.start()
        # The same service, not restarted: the failed step is simply sent again.
        got += observe(app, session, values[10:20], 10)["predictions"]
        got += observe(app, session, values[20:], 20)["predictions"]
        np.testing.assert_allclose(got, preds[:, 0], atol=1e-5)
        assert_state(session_state(app, session), h, c)


def test_replica_without_the_sessions_version_answers_410(
    make_client: MakeClient,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    # Replica b serves a repository where tiny-lstm has only version 2 (the same model).
    write_model(tmp_path, "tiny-lstm", "lstm", version=2, hidden=8, layers=2, seed=7)
    redis = {"session_store": "redis", "redis_url": redis_server.url}
    with make_client(**redis) as a, make_client(model_dir=tmp_path, **redis) as b:
        old = create(a, "tiny-lstm", version=1)["session"]
        current = create(a, "tiny-lstm")["session"]
        error = error_of(
            b.post(f"/v1/sessions/{old}/observe", json={"values": [1.0], "offset": 0}), 410
        )
        assert error["code"] == "version_gone"
        assert "'tiny-lstm' version 1" in error["message"]
        assert error_of(b.get(f"/v1/sessions/{old}", params={"state": "true"}), 410)
        # Without the state the description needs no model and still works.
        assert b.get(f"/v1/sessions/{old}").json()["version"] == 1
        assert observe(a, old, np.ones((1, 1)), 0)["offset"] == 1
        assert observe(b, current, np.ones((1, 1)), 0)["offset"] == 1


def test_stream_survives_a_redis_restart(
    make_client: MakeClient, own_redis_server: RedisServer, model_dir: Path
) -> None:
    values = series(12, seed=15)
    preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(values)
    settings = {
        "session_store": "redis",
        "redis_url": own_redis_server.url,
        "redis_timeout_s": 0.5,
    }
    with (
        make_client(**settings) as app,
        app.websocket_connect("/v1/models/tiny-lstm/stream") as ws,
    ):
        session = json.loads(ws.receive_text())["session"]
        ws.send_text(json.dumps({"values": as_json(values[:6]), "offset": 0}))
        got = json.loads(ws.receive_text())["predictions"]
        own_redis_server.stop()
        step = json.dumps({"values": as_json(values[6:]), "offset": 6})
        ws.send_text(step)
        error = json.loads(ws.receive_text())["error"]
        assert (error["status"], error["code"]) == (503, "session_store_unavailable")
        own_redis_server.start()
        ws.send_text(step)  # the same frame again, on the same connection
        got += json.loads(ws.receive_text())["predictions"]
        assert_state(session_state(app, session), h, c)
    np.testing.assert_allclose(got, preds[:, 0], atol=1e-5)


def test_readyz_follows_the_session_store(
    make_client: MakeClient, own_redis_server: RedisServer
) -> None:
    settings = {"session_store": "redis", "redis_url": own_redis_server.url, "redis_timeout_s": 0.2}
    with make_client(**settings) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["session_store"] == "ok"
        own_redis_server.stop()
        down = c.get("/readyz")
        assert down.status_code == 503
        assert down.json()["status"] == "not_ready"
        assert down.json()["session_store"] == "unreachable"
        assert c.post(
            "/v1/models/tiny-rnn/predict", json={"series": [{"values": [1.0]}]}
        ).is_success
        own_redis_server.start()
        assert c.get("/readyz").status_code == 200
    # A predict-only deployment stays ready without its Redis.
    with make_client(**settings, ready_needs_store=False) as c:
        own_redis_server.stop()
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["session_store"] == "not checked"
