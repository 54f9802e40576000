"""Sessions when Redis loses writes or dies: real redis-server processes, killed with kill -9.

- Redis comes back from an older RDB snapshot (a rollback), or fails over to a
  replica that missed the last writes: no step is ever applied on the state
  Redis lost, even by a replica that remembers it; a client ahead of Redis gets
  409 with the offset Redis has, and resyncs from there.
- An append-only Redis (``appendfsync everysec``, as docker-compose.yml) killed
  with kill -9 mid-stream keeps every step it acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.redis_fixture import REDIS_BINARY, RedisServer, TcpProxy
from tests.service.sessions_support import (
    MakeClient,
    as_json,
    assert_state,
    create,
    error_of,
    oracle,
    series,
    session_state,
)

pytestmark = pytest.mark.skipif(REDIS_BINARY is None, reason="redis-server is not installed")


def step(client: TestClient, session: str, values: np.ndarray, offset: int) -> dict[str, Any]:
    """One step that must be applied, sent again after a 503 as a client does."""
    for _ in range(20):
        response = client.post(
            f"/v1/sessions/{session}/observe", json={"values": as_json(values), "offset": offset}
        )
        if response.status_code != 503:  # Redis was just killed: the pool reconnects
            break
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def offset_in_redis(server: RedisServer, session: str) -> int:
    with server.client() as raw:
        value = raw.hget(f"seqcast:session:{session}", "offset")
    assert value is not None, "the session is gone from Redis"
    return int(value)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Started redis-servers, killed at the end whatever state the test left them in."""
    started: list[RedisServer] = []
    yield started
    for server in started:
        server.stop()


@pytest.mark.parametrize("disaster", ["rollback", "failover"])
def test_no_step_is_applied_on_a_state_redis_lost(
    make_client: MakeClient,
    model_dir: Path,
    tmp_path: Path,
    servers: list[RedisServer],
    disaster: str,
) -> None:
    """Redis acknowledges steps 10-19, then loses them: steps go on from what Redis has.

    rollback: kill -9, and Redis restarts from the RDB snapshot taken at offset 10.
    failover: the replica stopped following at offset 10 (as a partitioned one does),
    the primary is killed, and the replica, promoted, takes over the address.
    """
    mine, theirs = series(40, seed=31), series(40, seed=32)
    primary = RedisServer(tmp_path / "primary")  # no AOF: a restart loads the last RDB
    primary.start()
    servers.append(primary)
    replica: RedisServer | None = None
    if disaster == "failover":
        replica = RedisServer(tmp_path / "replica", replica_of=primary.port)
        replica.start()
        servers.append(replica)
    proxy = TcpProxy(primary.port)
    settings = {"session_store": "redis", "redis_url": proxy.url, "redis_timeout_s": 0.5}
    try:
        with make_client(**settings) as a, make_client(**settings) as b:
            # `first` goes through the lost-update sequence; `second` carries on from
            # the offset its client reached before the loss.
            first, second = (create(a, "tiny-lstm")["session"] for _ in range(2))
            for k in range(10):
                for session in (first, second):
                    step(a, session, mine[k : k + 1], k)
            with primary.client() as admin:
                if replica is None:
                    admin.save()  # the snapshot Redis will come back from
                else:
                    assert admin.wait(1, 10_000) == 1  # the replica has every step so far ...
                    with replica.client() as r:
                        r.replicaof("NO", "ONE")  # ... and none after this
            for k in range(10, 20):  # acknowledged through replica A, then lost
                for session in (first, second):
                    step(a, session, mine[k : k + 1], k)
            primary.kill()
            if replica is None:
                primary.start()
            else:
                proxy.switch(replica.port)
            for session in (first, second):
                assert b.get(f"/v1/sessions/{session}").json()["offset"] == 10

            # Another client steps `first` from offset 10 through replica B. Replica A
            # still remembers the record it wrote at offset 20; the next step at 20
            # through A must continue what Redis holds, not that record.
            for k in range(10, 20):
                step(b, first, theirs[k : k + 1], k)
            answer = step(a, first, mine[20:21], 20)
            history = np.concatenate([mine[:10], theirs[10:20], mine[20:21]])
            preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(history)
            np.testing.assert_allclose(answer["predictions"], preds[20:, 0], atol=1e-5)
            assert_state(session_state(a, first), h, c)
            assert_state(session_state(b, first), h, c)

            # `second`'s client is at offset 20, Redis at 10: a clear 409 with
            # Redis's offset, and nothing applied.
            response = a.post(
                f"/v1/sessions/{second}/observe",
                json={"values": as_json(mine[20:21]), "offset": 20},
            )
            error = error_of(response, 409)
            assert (error["code"], error["offset"]) == ("offset_conflict", 10)
            preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(mine[:10])
            assert_state(session_state(a, second), h, c)
            # It resyncs: sends the lost steps again, through both replicas.
            for k in range(10, 21):
                step((a, b)[k % 2], second, mine[k : k + 1], k)
            preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(mine[:21])
            assert_state(session_state(a, second), h, c)
    finally:
        proxy.close()


def test_kill_9_of_append_only_redis_loses_no_acknowledged_step(
    make_client: MakeClient, model_dir: Path, tmp_path: Path, servers: list[RedisServer]
) -> None:
    """Streams step on while Redis (AOF, appendfsync everysec) is killed with kill -9.

    Every step Redis acknowledged was written to the AOF (write(2), in the kernel)
    before Redis answered, so the restarted Redis has it: each session stands at
    least at the offset its client saw acknowledged, and at most one step later (a
    step applied whose answer the kill cut off). Then every stream sends its
    unanswered step again and finishes, each step applied exactly once.
    """
    server = RedisServer(tmp_path / "redis", persistent=True, appendfsync="everysec")
    server.start()
    servers.append(server)
    streams, length = 6, 200
    values = [series(length, seed=50 + i) for i in range(streams)]
    settings = {"session_store": "redis", "redis_url": server.url, "redis_timeout_s": 0.5}
    acked = [0] * streams  # the offset each stream's last 200 answer gave
    predictions: list[list[float]] = [[] for _ in range(streams)]
    settled = threading.Semaphore(0)  # released once per stream: halted by the kill, or done
    resume = threading.Event()
    failures: list[str] = []

    def run(app: TestClient, i: int, session: str) -> None:
        offset, halted = 0, False
        try:
            while offset < length:
                body = {"values": as_json(values[i][offset : offset + 1]), "offset": offset}
                response = app.post(f"/v1/sessions/{session}/observe", json=body)
                if response.status_code == 200:
                    answer = response.json()
                    predictions[i] += answer["predictions"]
                    offset = acked[i] = answer["offset"]
                    continue
                if response.status_code != 503:
                    failures.append(f"stream {i} at {offset}: {response.text}")
                    return
                if not halted:  # Redis is down: report, and wait for the test's go
                    halted = True
                    settled.release()
                    resume.wait()
        finally:
            if not halted:
                settled.release()

    with make_client(**settings) as app:
        sessions = [create(app, "tiny-gru")["session"] for _ in range(streams)]
        threads = [threading.Thread(target=run, args=(app, i, s)) for i, s in enumerate(sessions)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while sum(acked) < streams * length // 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.kill()  # mid-stream: every stream has steps in flight
        for _ in range(streams):
            assert settled.acquire(timeout=60)
        assert not failures, failures
        assert 0 < sum(acked) < streams * length, "the kill did not land mid-stream"
        server.start()  # on the same directory: it loads its AOF
        stored = [offset_in_redis(server, s) for s in sessions]
        lost = sum(max(0, a - s) for a, s in zip(acked, stored, strict=True))
        assert lost == 0, f"acknowledged {acked}, Redis has {stored}"
        assert all(s - a in (0, 1) for a, s in zip(acked, stored, strict=True))
        resume.set()
        for t in threads:
            t.join(timeout=60)
        assert not failures, failures
        assert acked == [length] * streams
        for i, session in enumerate(sessions):
            preds, h, _ = oracle(model_dir, "tiny-gru", 1).run(values[i])
            np.testing.assert_allclose(predictions[i], preds[:, 0], atol=1e-5)
            assert_state(session_state(app, session), h, None)
