"""Helpers shared by the session, stream and client tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.redis_fixture import RedisServer, free_port
from tests.service.oracle import Oracle

STORES = ["memory", "redis"]
MakeClient = Callable[..., AbstractContextManager[TestClient]]


def store_settings(store: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides for a service on the given session store."""
    if store == "memory":
        return {"session_store": "memory"}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"session_store": "redis", "redis_url": server.url}


def series(n: int, features: int = 1, seed: int = 0) -> np.ndarray:
    """(n, features) test values in original units."""
    t = np.arange(n)[:, None] + np.arange(features)[None, :] * 0.5
    noise = np.random.default_rng(seed).normal(0, 0.1, (n, features))
    return np.sin(t * 0.37) * 2.0 + noise


def as_json(values: np.ndarray) -> list[Any]:
    """Numbers for one feature, rows for several: how the API takes values."""
    out: list[Any] = values[:, 0].tolist() if values.shape[1] == 1 else values.tolist()
    return out


def oracle(model_dir: Path, name: str, version: int) -> Oracle:
    return Oracle(model_dir / name / str(version))


def create(client: TestClient, name: str, body: object = None, version: int | None = None) -> dict:
    url = f"/v1/models/{name}" + (f"/versions/{version}" if version else "") + "/sessions"
    response = client.post(url, json=body) if body is not None else client.post(url)
    assert response.status_code == 201, response.text
    info: dict = response.json()
    return info


def observe(
    client: TestClient, session: str, values: np.ndarray, offset: int, horizon: int = 1
) -> dict:
    response = client.post(
        f"/v1/sessions/{session}/observe",
        json={"values": as_json(values), "offset": offset, "horizon": horizon},
    )
    assert response.status_code == 200, response.text
    answer: dict = response.json()
    return answer


def session_state(client: TestClient, session: str) -> dict:
    response = client.get(f"/v1/sessions/{session}", params={"state": "true"})
    assert response.status_code == 200, response.text
    info: dict = response.json()
    return info


def assert_state(info: dict, h: np.ndarray, c: np.ndarray | None) -> None:
    np.testing.assert_allclose(info["state"]["h"], h, atol=1e-5)
    if c is None:
        assert "c" not in info["state"]
    else:
        np.testing.assert_allclose(info["state"]["c"], c, atol=1e-5)


def error_of(response: Any, status: int) -> dict:
    assert response.status_code == status, response.text
    error: dict = response.json()["error"]
    assert error["status"] == status
    return error


@contextmanager
def started(make_client: MakeClient, **settings: Any) -> Iterator[TestClient]:
    with make_client(**settings) as client:
        yield client


def push_concurrently(
    clients: list[TestClient],
    session: str,
    chunks: list[np.ndarray],
    senders_per_chunk: int = 2,
    workers: int = 16,
) -> dict[int, list[bytes]]:
    """Send every chunk at its offset from several workers at once, until each is applied.

    A worker whose chunk is not yet due (409 with an offset before it) waits and
    retries; one that sees the session past its chunk stops. Returns the 200
    answers per chunk index.
    """
    starts = np.cumsum([0] + [len(c) for c in chunks[:-1]]).tolist()

    def push(job: int) -> tuple[int, bytes | None]:
        i = job // senders_per_chunk
        client = clients[job % len(clients)]
        body = {"values": as_json(chunks[i]), "offset": starts[i]}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            response = client.post(f"/v1/sessions/{session}/observe", json=body)
            if response.status_code == 200:
                return i, response.content
            error = error_of(response, 409)
            if error["offset"] > starts[i]:
                return i, None  # another sender applied it and the session moved on
            time.sleep(0.002)
        raise AssertionError(f"chunk {i} was never applied")

    answers: dict[int, list[bytes]] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, body in pool.map(push, range(senders_per_chunk * len(chunks))):
            if body is not None:
                answers.setdefault(i, []).append(body)
    return answers


@contextmanager
def live_server(settings: Settings) -> Iterator[str]:
    """A real uvicorn server for the app in a background thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "server thread ended"
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
