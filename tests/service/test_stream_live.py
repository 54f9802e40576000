"""The WebSocket stream through a real uvicorn server and a real WebSocket client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from service.settings import Settings
from tests.redis_fixture import RedisServer
from tests.service.sessions_support import as_json, live_server, oracle, series


@pytest.fixture(scope="module")
def address(model_dir: Path, redis_server: RedisServer) -> Iterator[str]:
    settings = Settings(model_dir=model_dir, session_store="redis", redis_url=redis_server.url)
    with live_server(settings) as where:
        yield where


def test_stream_over_the_network_then_http_on_the_same_session(
    address: str, model_dir: Path
) -> None:
    values = series(30, seed=14)
    preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(values)
    got: list[float] = []
    with connect(f"ws://{address}/v1/models/tiny-lstm/stream", open_timeout=10) as ws:
        hello = json.loads(ws.recv(timeout=10))
        session = hello["session"]
        # Pipelined: every frame is sent before the first answer is read.
        chunks = np.split(values[:20], [5, 6, 13])
        for chunk in chunks:
            ws.send(json.dumps({"values": as_json(chunk)}))
        ws.send("{broken")
        answers = [json.loads(ws.recv(timeout=10)) for _ in range(len(chunks) + 1)]
        assert answers[-1]["error"]["status"] == 422
        for answer in answers[:-1]:
            got += answer["predictions"]
        assert answers[-2]["offset"] == 20
    with httpx.Client(base_url=f"http://{address}") as http:
        step = http.post(
            f"/v1/sessions/{session}/observe", json={"values": as_json(values[20:]), "offset": 20}
        )
        assert step.status_code == 200
        got += step.json()["predictions"]
        info = http.get(f"/v1/sessions/{session}", params={"state": "true"}).json()
    np.testing.assert_allclose(got, preds[:, 0], atol=1e-5)
    np.testing.assert_allclose(info["state"]["h"], h, atol=1e-5)
    np.testing.assert_allclose(info["state"]["c"], c, atol=1e-5)
