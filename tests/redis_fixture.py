"""A real redis-server for the tests: Debian's binary on a free loopback port.

Registered as a pytest plugin from tests/conftest.py. Tests that need Redis
take ``redis_server`` (one server for the whole run) or ``own_redis_server``
(a private one they may stop and restart). Both skip only when the
redis-server binary is absent; scripts/test installs it. Tests of disasters
build their own: ``RedisServer.kill`` is kill -9, a server started again on
its directory loads what it had written (its AOF, else its last RDB
snapshot), ``replica_of`` starts a replica, and ``TcpProxy`` is the address
that a failover moves to the promoted replica.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
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

    Without ``persistent`` nothing is written to disk unless a client asks
    (SAVE writes an RDB snapshot, which a restart loads), so a restart starts
    empty or from that snapshot. With it, every write goes to an append-only
    file (``appendfsync``: "always", or "everysec" as docker-compose.yml), so a
    restart comes back with every session, as a production Redis configured for
    durability does.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        persistent: bool = False,
        password: str | None = None,
        appendfsync: str = "always",
        replica_of: int | None = None,
    ) -> None:
        assert REDIS_BINARY is not None
        self.workdir = workdir
        self.port = port or free_port()
        self.persistent = persistent
        self.password = password  # requirepass: clients must AUTH with it
        self.appendfsync = appendfsync
        self.replica_of = replica_of  # the port of the primary this one replicates
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
            "--appendfsync": self.appendfsync,
            "--dir": str(self.workdir),
            "--logfile": str(self.workdir / "redis.log"),
            "--daemonize": "no",
        }
        if self.password:
            args["--requirepass"] = self.password
        argv = [str(REDIS_BINARY), *(part for pair in args.items() for part in pair)]
        if self.replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
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

    def kill(self) -> None:
        """kill -9: no shutdown, no last save; what reached the kernel is all that stays."""
        assert self.proc is not None, "not running"
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()


class TcpProxy:
    """A loopback address for Redis that can be moved to another server.

    Stands for what a failover moves (a DNS name, a virtual IP, a Sentinel-aware
    proxy): ``switch`` cuts every open connection, and new ones reach the new
    server.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:  # the target is down: as if the address led nowhere
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._cut({src, dst})

    def _cut(self, sockets: set[socket.socket]) -> None:
        for s in sockets:
            with self._lock:
                self._open.discard(s)
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def switch(self, target_port: int) -> None:
        self.target_port = target_port
        with self._lock:
            cut = set(self._open)
        self._cut(cut)

    def close(self) -> None:
        self._listener.close()
        self.switch(self.target_port)


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
