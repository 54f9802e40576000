"""A real redis-server for the tests: Debian's binary on a free loopback port.

Registered as a pytest plugin from tests/conftest.py. Tests that need Redis
take ``redis_server`` (one server for the whole run) or ``own_redis_server``
(a private one they may stop and restart). Both skip only when the
redis-server binary is absent; scripts/test installs it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

REDIS_BINARY = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process; can be stopped and restarted on the same port.

    Without ``persistent`` nothing is written to disk and a restart starts empty.
    With it, every write goes to an append-only file first (``appendfsync
    always``), so a restart comes back with every session, as a production Redis
    configured for durability does.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        persistent: bool = False,
        password: str | None = None,
    ) -> None:
        assert REDIS_BINARY is not None
        self.workdir = workdir
        self.port = port or free_port()
        self.persistent = persistent
        self.password = password  # requirepass: clients must AUTH with it
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        assert self.proc is None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = {
            "--port": str(self.port),
            "--bind": "127.0.0.1",
            "--save": "",  # no RDB snapshots
            "--appendonly": "yes" if self.persistent else "no",
            "--appendfsync": "always",
            "--dir": str(self.workdir),
            "--logfile": str(self.workdir / "redis.log"),
            "--daemonize": "no",
        }
        if self.password:
            args["--requirepass"] = self.password
        argv = [str(REDIS_BINARY), *(part for pair in args.items() for part in pair)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                log = (self.workdir / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {log}")
            try:
                with redis.Redis(
                    port=self.port, password=self.password, socket_timeout=0.5
                ) as client:
                    if client.ping():
                        return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _require_binary() -> None:
    if REDIS_BINARY is None:
        pytest.skip("redis-server is not installed (scripts/test installs it)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the whole test run."""
    _require_binary()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A persistent redis-server private to one test, which may stop and restart it."""
    _require_binary()
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
