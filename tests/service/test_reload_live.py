"""Reloading in real `seqcast serve` processes: SIGHUP, several workers, and under load."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.modelkit import write_model
from tests.service.reload_support import (
    AS_ADMIN,
    AS_USER,
    call,
    converge,
    publish,
    reload_under_load,
    serve,
    unpublish,
    worker_views,
    wrong_answers,
)


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions to publish: m/1, m/2, m/3 (three different LSTMs)."""
    root = tmp_path_factory.mktemp("stock")
    for version in (1, 2, 3):
        write_model(root, "m", "lstm", version=version, hidden=8, seed=version)
    return root


@pytest.fixture
def root(stock: Path, tmp_path: Path) -> Path:
    """A model directory serving m/1."""
    root = tmp_path / "models"
    publish(stock, root, "m/1")
    return root


def test_sighup_reloads_a_single_process(stock: Path, root: Path) -> None:
    with serve(root) as server:
        publish(stock, root, "m/2")
        os.kill(server.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while call(server.base, "GET", "/v1/models/m", headers=AS_USER)[1]["versions"] != [1, 2]:
            assert time.monotonic() < deadline, "SIGHUP did not load m/2"
            time.sleep(0.1)
        assert server.proc.poll() is None  # SIGHUP re-scanned; it did not end the process
        status, answer = call(
            server.base, "POST", "/v1/models/m/predict", {"series": [{"values": [1.0]}]}, AS_USER
        )
        assert (status, answer["version"]) == (200, 2)


@pytest.mark.slow
def test_every_worker_converges(stock: Path, root: Path) -> None:
    with serve(root, workers=2) as server:
        before = worker_views(server.base, 2)
        assert all(v["models"] == ["m/1"] for v in before.values())
        # SIGHUP to the supervisor: forwarded to each worker, which re-scans (no restart).
        publish(stock, root, "m/2")
        os.kill(server.proc.pid, signal.SIGHUP)
        converge(server.base, 2, ["m/1", "m/2"])
        # POST /admin/reload reaches one worker; it has the supervisor signal the others.
        unpublish(root, "m/1")
        status, answer = call(server.base, "POST", "/admin/reload", headers=AS_ADMIN)
        assert status == 200
        assert answer["models"] == ["m/2"]
        assert answer["other_workers_signalled"] is True
        converge(server.base, 2, ["m/2"])
        after = worker_views(server.base, 2)
        assert set(after) == set(before)  # the same two processes: reloaded, not restarted


def test_polling_converges_every_worker(stock: Path, root: Path) -> None:
    with serve(root, workers=2, SEQCAST_RELOAD_POLL_S="0.1") as server:
        publish(stock, root, "m/2")
        converge(server.base, 2, ["m/1", "m/2"])


@pytest.mark.slow
def test_reload_under_concurrent_load(stock: Path, root: Path) -> None:
    """Add m/2, remove m/1, add a broken m/3 while clients predict: no predict fails."""
    with serve(root) as server:
        run = reload_under_load(server.base, root, stock)
        assert wrong_answers(run) == []
        assert len(run.default) > 0
        assert run.answers["add m/2"]["loaded"] == ["m/2"]
        assert run.answers["remove m/1"]["unloaded"] == ["m/1"]
        assert [f["model"] for f in run.answers["add broken m/3"]["failures"]] == ["m/3"]
        status, models = call(server.base, "GET", "/v1/models", headers=AS_USER)
        assert [(m["name"], m["versions"]) for m in models["models"]] == [("m", [2])]
        status, ready = call(server.base, "GET", "/readyz")
        assert status == 200
        assert [(f["model"], f["found"]) for f in ready["failures"]] == [("m/3", "reload")]
