"""Secrets never reach a log line or an answer: the Redis password, API keys, session ids."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.redaction import redact
from service.settings import Settings
from tests.redis_fixture import REDIS_BINARY, RedisServer

PASSWORD = "s3cret-redis-pass-7781"
KEY = "client-key-" + "k" * 24


@pytest.mark.skipif(REDIS_BINARY is None, reason="redis-server is not installed")
def test_a_redis_outage_leaks_neither_password_nor_address(
    tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    server.start()
    settings = Settings(
        model_dir=model_dir,
        session_store="redis",
        redis_url=server.url,
        redis_timeout_s=0.2,
        api_keys=f"client:{KEY}",
    )
    auth = {"Authorization": f"Bearer {KEY}"}
    answers: list[str] = []
    try:
        with caplog.at_level(logging.DEBUG), TestClient(create_app(settings)) as c:
            sid = c.post("/v1/models/tiny-rnn/sessions", headers=auth).json()["session"]
            server.stop()  # the outage
            for _ in range(3):
                for response in (
                    c.post(f"/v1/sessions/{sid}/observe", json={"values": [1.0], "offset": 0},
                           headers=auth),
                    c.post("/v1/models/tiny-rnn/sessions", headers=auth),
                    c.get(f"/v1/sessions/{sid}", headers=auth),
                    c.delete(f"/v1/sessions/{sid}", headers=auth),
                ):  # fmt: skip
                    assert response.status_code == 503
                    assert response.json()["error"]["message"] == "session store unavailable"
                    answers.append(response.text + str(response.headers))
            with c.websocket_connect(
                f"/v1/models/tiny-rnn/stream?session={sid}", headers=auth
            ) as ws:
                answers.append(ws.receive_text())
    finally:
        server.stop()
    assert any("session store" in line for line in caplog.messages)  # it was logged ...
    for text in (caplog.text, *answers):  # ... and nothing secret went out
        assert PASSWORD not in text
        assert KEY not in text
    for answer in answers:
        assert str(server.port) not in answer
        assert "127.0.0.1" not in answer


def test_redact_covers_urls_and_registered_secrets() -> None:
    assert redact("redis://:pw123@host:6379/0") == "redis://***@host:6379/0"
    assert redact("rediss://user:pw@h/1 and https://a:b@c") == "rediss://***@h/1 and https://***@c"
    assert redact("no secrets here") == "no secrets here"
    create_app(Settings(api_keys=f"someone:{KEY}"))  # loading a key registers its secret
    assert redact(f"header was {KEY}") == "header was ***"
