"""/metrics of a real `seqcast serve` with two worker processes: counts summed over both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.redis_fixture import RedisServer, free_port
from tests.service.test_metrics import by_model, of, parse

pytestmark = pytest.mark.slow


class Served:
    def __init__(self, base: str, metrics_dirs: Path, proc: subprocess.Popen[bytes]) -> None:
        self.base = base
        self.metrics_dirs = metrics_dirs  # where `seqcast serve` makes its metrics directory
        self.proc = proc

    def pids(self, kind: str = "counter") -> set[int]:
        """Processes that have written values of this kind to the shared directory."""
        return {
            int(path.stem.rsplit("_", 1)[1])
            for path in self.metrics_dirs.glob(f"seqcast-metrics-*/{kind}_*.db")
        }

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        # A new connection each time: either worker may answer.
        response = httpx.get(f"{self.base}/metrics", timeout=10)
        assert response.status_code == 200
        return parse(response.text)


@pytest.fixture
def served(model_dir: Path, redis_server: RedisServer, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    env = dict(os.environ, TMPDIR=str(tmp_path))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        SEQCAST_SESSION_STORE="redis", SEQCAST_REDIS_URL=redis_server.url, SEQCAST_ACCESS_LOG="0"
    )
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "2"]
    cmd += ["--model-dir", str(model_dir), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "server did not become ready"
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield Served(base, tmp_path, proc)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    # The run's metrics directory is gone with it.
    assert not list(tmp_path.glob("seqcast-metrics-*"))


def test_two_workers_count_together_and_survive_a_worker_restart(served: Served) -> None:
    body = {"series": [{"values": [1, 2, 3]}]}
    sent = 0
    # Fresh connections until both workers have answered some (the kernel picks).
    while len(served.pids()) < 2 or sent < 20:
        assert sent < 400, f"one worker answered everything: {served.pids()}"
        response = httpx.post(f"{served.base}/v1/models/tiny-rnn/predict", json=body)
        assert response.status_code == 200
        sent += 1
    with httpx.Client(base_url=served.base) as http:  # one connection: one worker
        sid = http.post("/v1/models/tiny-gru/sessions").json()["session"]
    step, other = {"values": [1, 2], "offset": 0}, {"values": [9], "offset": 0}
    for body, expected in ((step, 200), (step, 200), (other, 409)):  # applied, replayed, 409
        response = httpx.post(f"{served.base}/v1/sessions/{sid}/observe", json=body)
        assert response.status_code == expected

    rnn, gru = ("tiny-rnn", "1"), ("tiny-gru", "1")

    def check() -> None:
        samples = served.scrape()
        requests = of(samples, "seqcast_inference_requests_total")
        assert requests[("200", "tiny-rnn", "success", "1")] == sent
        assert by_model(samples, "seqcast_inference_executions_total")[rnn] == sent
        assert by_model(samples, "seqcast_sessions_created_total") == {gru: 1}
        assert of(samples, "seqcast_session_steps_total") == {
            ("tiny-gru", "applied", "1"): 1,
            ("tiny-gru", "replayed", "1"): 1,
            ("tiny-gru", "conflict", "1"): 1,
        }
        assert of(samples, "seqcast_http_requests_in_flight") == {(): 1}  # the scrape

    for _ in range(4):  # whichever worker answers, the same sums
        check()

    # A worker killed outright: the server starts another; the dead one's counts stay,
    # its live gauges go at the next scrape.
    victim = min(served.pids("gauge_livesum"))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(served.pids("gauge_livesum") - {victim}) < 2:
        assert time.monotonic() < deadline, "no worker replaced the killed one"
        time.sleep(0.2)
    for _ in range(4):
        check()
    assert victim not in served.pids("gauge_livesum")
    assert victim in served.pids("counter")
