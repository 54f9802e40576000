"""SEQCAST_LOG_FORMAT=json: one JSON object per line for every log line, secrets redacted."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.redaction import add_secret, session_tag
from service.telemetry.logs import JsonFormatter, formatter
from tests.redis_fixture import free_port

SECRET = "json-log-secret-7f3a9c"


def test_a_record_is_one_redacted_json_line() -> None:
    add_secret(SECRET)
    try:
        raise ValueError(f"bad {SECRET}")
    except ValueError:
        record = logging.LogRecord(
            "seqcast.test",
            logging.ERROR,
            __file__,
            1,
            "got %s\nfrom redis://:%s@host",
            (SECRET, SECRET),
            sys.exc_info(),
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "error"
    assert parsed["logger"] == "seqcast.test"
    assert parsed["message"] == "got ***\nfrom redis://***@host"
    assert "ValueError: bad ***" in parsed["exception"]
    assert SECRET not in line


def test_text_stays_the_default() -> None:
    assert not isinstance(formatter(), JsonFormatter)
    assert isinstance(formatter("json"), JsonFormatter)


@pytest.mark.slow
def test_serve_with_two_workers_writes_only_json_lines(model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, SEQCAST_LOG_FORMAT="json", SEQCAST_API_KEYS=f"ops:{SECRET}")
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "2"]
    cmd += ["--model-dir", str(model_dir), "--log-level", "info"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    key = {"X-API-Key": SECRET}
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=key) as http:
            while True:
                assert proc.poll() is None, "server exited"
                assert time.monotonic() < deadline, "server did not become ready"
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            predict = {"series": [{"values": [1, 2, 3]}]}
            headers = {"X-Request-ID": "req-json-1"}
            r = http.post("/v1/models/tiny-lstm/predict", json=predict, headers=headers)
            assert r.status_code == 200
            sid = http.post("/v1/models/tiny-rnn/sessions").json()["session"]
            step = {"values": [1], "offset": 0}
            assert http.post(f"/v1/sessions/{sid}/observe", json=step).status_code == 200
            assert http.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    lines = [line for line in err.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert SECRET not in err
    assert sid not in err
    access = [r for r in records if r["logger"] == "seqcast.access"]
    (predicted,) = [r for r in access if r["request_id"] == "req-json-1"]
    assert predicted["method"] == "POST"
    assert predicted["path"] == "/v1/models/tiny-lstm/predict"
    assert (predicted["model"], predicted["version"], predicted["status"]) == ("tiny-lstm", 2, 200)
    assert predicted["duration_ms"] > 0
    assert predicted["key"] == "ops"
    (observed,) = [r for r in access if r["path"].endswith("/observe")]
    assert observed["path"] == f"/v1/sessions/{session_tag(sid)}/observe"
    assert (observed["model"], observed["version"]) == ("tiny-rnn", 1)
    refused = [r for r in access if r["status"] == 401]
    assert len(refused) == 1
    assert "model" not in refused[0]
    # Both workers and the parent wrote through the same configuration.
    assert len({r["process"] for r in records}) >= 3
    assert any(r["logger"].startswith("uvicorn") for r in records)
