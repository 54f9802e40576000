"""`seqcast serve`: settings checked up front, then a real uvicorn serving the repository."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from service.cli import main
from service.http_protocol import BoundedHttpProtocol
from service.server import server_config, uvicorn_options
from service.settings import Settings


def test_invalid_settings_exit_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "99999"]) == 2
    assert "port" in capsys.readouterr().err


def test_uvicorn_uses_uvloop_and_the_bounded_httptools_protocol() -> None:
    assert uvicorn_options() == {"loop": "uvloop"}
    config = server_config(Settings(keep_alive_timeout_s=2.5, shutdown_timeout_s=4))
    assert config.http is BoundedHttpProtocol
    assert config.timeout_keep_alive == 2.5
    # Requests are cut at 4 s (service.http_protocol); what remains is cancelled after.
    assert (config.shutdown_timeout_s, config.timeout_graceful_shutdown) == (4, 4.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_seqcast_serve_answers_predict(model_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    cmd += ["--model-dir", str(model_dir), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=1) as r:
                    assert r.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "server did not become ready"
                time.sleep(0.2)
        body = json.dumps({"series": [{"values": [0.1, 0.2, 0.3], "horizon": 2}]}).encode()
        request = urllib.request.Request(
            f"{base}/v1/models/tiny-lstm/predict", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            answer = json.loads(r.read())
        assert len(answer["series"][0]["forecast"]) == 2
        assert len(answer["series"][0]["state"]["c"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def test_several_workers_refuse_an_app_setting_once_and_exit_2(model_dir: Path) -> None:
    """A setting only the app checks (an admin key naming no key) stops `seqcast serve`
    before any worker starts, rather than every worker failing and starting again."""
    env = {
        "SEQCAST_MODEL_DIR": str(model_dir),
        "SEQCAST_WORKERS": "2",
        "SEQCAST_PORT": "0",
        "SEQCAST_API_KEYS": "user:user-secret-0123456789",
        "SEQCAST_ADMIN_KEYS": "nosuchkey",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "SEQCAST_ADMIN_KEYS names ['nosuchkey']" in done.stderr
