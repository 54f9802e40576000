"""Reloading against real `seqcast serve` processes: start one, publish versions, load it.

Shared by tests/service/test_reload_live.py and bench/reload_bench.py.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import free_port, stop

ADMIN_SECRET = "admin-secret-0123456789"
USER_SECRET = "user-secret-01234567890"
KEYS_ENV = {
    "SEQCAST_API_KEYS": f"admin:{ADMIN_SECRET},user:{USER_SECRET}",
    "SEQCAST_ADMIN_KEYS": "admin",
}
AS_ADMIN = {"Authorization": f"Bearer {ADMIN_SECRET}"}
AS_USER = {"Authorization": f"Bearer {USER_SECRET}"}


def publish(stock: Path, root: Path, key: str, *, broken: bool = False) -> Path:
    """Copy stock's <name>/<version> into root as training does: whole, then renamed in.
    `broken`: its model file matches the manifest's sha256 but is no ONNX graph."""
    name, version = key.split("/")
    incoming = root / name / f".incoming-{version}"
    shutil.copytree(stock / key, incoming)
    if broken:
        garbage = b"not an onnx graph"
        (incoming / "model.onnx").write_bytes(garbage)
        manifest = json.loads((incoming / "manifest.json").read_text())
        manifest["onnx"]["sha256"] = hashlib.sha256(garbage).hexdigest()
        (incoming / "manifest.json").write_text(json.dumps(manifest))
    target = root / name / version
    os.rename(incoming, target)
    return target


def unpublish(root: Path, key: str) -> None:
    shutil.rmtree(root / key)


@dataclass
class Server:
    base: str  # http://127.0.0.1:<port>
    proc: subprocess.Popen[bytes]


@contextmanager
def serve(root: Path, *, workers: int = 1, **env: str) -> Iterator[Server]:
    """`seqcast serve` over root in a child process, with admin keys; until /healthz."""
    port = free_port()
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    cmd += ["--model-dir", str(root), "--log-level", "warning", "--workers", str(workers)]
    environ = {**os.environ, **KEYS_ENV, "SEQCAST_ACCESS_LOG": "false", **env}
    proc = subprocess.Popen(
        cmd, cwd=root.parent, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        yield Server(base, proc)
    finally:
        stop(proc)
        if proc.stdout:
            proc.stdout.close()


def call(
    base: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """(status, JSON body) of one request on a new connection."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}{path}", data, method=method)
    for k, v in {**(headers or {}), "Content-Type": "application/json"}.items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def worker_views(base: str, workers: int, deadline_s: float = 30) -> dict[int, dict[str, Any]]:
    """GET /admin/repository on new connections until every worker has answered:
    {pid: its answer}."""
    views: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + deadline_s
    while len(views) < workers:
        assert time.monotonic() < deadline, f"only workers {sorted(views)} answered"
        status, view = call(base, "GET", "/admin/repository", headers=AS_ADMIN)
        assert status == 200, view
        views[view["worker"]] = view
    return views


def converge(base: str, workers: int, models: list[str], deadline_s: float = 30) -> None:
    """Wait until every worker serves exactly `models`."""
    deadline = time.monotonic() + deadline_s
    while True:
        views = worker_views(base, workers, deadline_s)
        if all(v["models"] == models for v in views.values()):
            return
        assert time.monotonic() < deadline, {pid: v["models"] for pid, v in views.items()}
        time.sleep(0.1)


# Reload under load


PREDICT = json.dumps({"series": [{"values": [0.1 * i for i in range(20)], "horizon": 4}]})


@dataclass
class Sample:
    started: float
    ended: float
    status: int  # 0: no answer (connection error)
    version: int | None


@dataclass
class LoadRun:
    """Every predict the clients sent, and when each reload ran."""

    default: list[Sample] = field(default_factory=list)  # predicts naming no version
    pinned: list[Sample] = field(default_factory=list)  # predicts naming version 1
    reloads: dict[str, tuple[float, float]] = field(default_factory=dict)  # step -> (start, end)
    answers: dict[str, Any] = field(default_factory=dict)  # step -> admin answer


def _client(base: str, path: str, out: list[Sample], stop: threading.Event) -> None:
    host = base.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=30)
    headers = {**AS_USER, "Content-Type": "application/json"}
    while not stop.is_set():
        started = time.perf_counter()
        try:
            conn.request("POST", path, PREDICT, headers)
            response = conn.getresponse()
            body = json.loads(response.read())
            status, version = response.status, body.get("version")
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(host, timeout=30)
            status, version = 0, None
        out.append(Sample(started, time.perf_counter(), status, version))
    conn.close()


def reload_under_load(
    base: str, root: Path, stock: Path, *, clients: int = 4, settle_s: float = 0.5
) -> LoadRun:
    """Clients predict without a version (and one with version 1) all along, while m/2 is
    added, m/1 removed and a broken m/3 added, each followed by POST /admin/reload."""
    run = LoadRun()
    stop = threading.Event()
    shards: list[list[Sample]] = [[] for _ in range(clients)]
    threads = [
        threading.Thread(target=_client, args=(base, "/v1/models/m/predict", shard, stop))
        for shard in shards
    ]
    threads.append(
        threading.Thread(
            target=_client, args=(base, "/v1/models/m/versions/1/predict", run.pinned, stop)
        )
    )
    for thread in threads:
        thread.start()
    try:
        steps = [
            ("add m/2", lambda: publish(stock, root, "m/2")),
            ("remove m/1", lambda: unpublish(root, "m/1")),
            ("add broken m/3", lambda: publish(stock, root, "m/3", broken=True)),
        ]
        for step, change in steps:
            time.sleep(settle_s)
            change()
            started = time.perf_counter()
            status, answer = call(base, "POST", "/admin/reload", headers=AS_ADMIN)
            run.reloads[step] = (started, time.perf_counter())
            assert status == 200, answer
            run.answers[step] = answer
        time.sleep(settle_s)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    run.default = sorted((s for shard in shards for s in shard), key=lambda s: s.started)
    return run


def wrong_answers(run: LoadRun) -> list[str]:
    """Every answer the contract does not allow, described; [] when all are right."""
    wrong: list[str] = []
    added_at = run.reloads["add m/2"][1]
    removing, removed_at = run.reloads["remove m/1"]
    for s in run.default:
        if s.status != 200:
            wrong.append(f"a predict naming no version got {s.status}")
        elif s.started > added_at and s.version != 2:
            wrong.append(f"a predict sent after m/2 was loaded ran on version {s.version}")
    for s in run.pinned:
        if s.status == 200 and s.version == 1 and s.started < removed_at:
            continue  # v1 served until its removal took effect
        if s.status == 404 and s.started > removing:
            continue  # after its removal, v1 is not found
        wrong.append(f"a predict naming version 1 at {s.started:.3f} got {s.status}")
    return wrong
