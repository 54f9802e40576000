"""Time bounds of `seqcast serve`, on real server processes and raw sockets.

Slow clients are cut at the header and body read timeouts, idle keep-alive connections
at the keep-alive timeout, connections past max_connections are refused, and SIGTERM
lets in-flight requests finish, cuts stragglers at the shutdown timeout and exits 0.
The deadlines are short here (1 s); assertions bound times from below only (a server
cannot cut before its deadline), with generous socket timeouts above.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PREDICT = b"POST /v1/models/tiny-rnn/predict HTTP/1.1\r\nHost: test\r\n"
BODY = json.dumps({"series": [{"values": [0.1, 0.2, 0.3]}]}).encode()
HEAD = PREDICT + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY)


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    port: int

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        return sock


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve(model_dir: Path, cwd: Path, **settings: object) -> Iterator[Serve]:
    """`seqcast serve` in its own process with SEQCAST_ settings, ready to answer."""
    port = _free_port()
    env = dict(os.environ, SEQCAST_LOG_LEVEL="warning")
    env.update({f"SEQCAST_{k.upper()}": str(v) for k, v in settings.items()})
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    cmd += ["--model-dir", str(model_dir)]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "server did not become ready"
                time.sleep(0.1)
        yield Serve(proc, port)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(sock: socket.socket) -> bytes:
    """One response (head and Content-Length body) on a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the body"
        body += chunk
    return head + b"\r\n\r\n" + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def error_of(answer: bytes) -> dict[str, object]:
    error: dict[str, object] = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    return error


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with serve(
        model_dir,
        tmp_path_factory.mktemp("serve"),
        header_timeout_s=1,
        body_timeout_s=1,
        keep_alive_timeout_s=1,
    ) as s:
        yield s


def test_slow_headers_are_cut_at_the_header_timeout(server: Serve) -> None:
    with server.connect() as sock:
        start = time.monotonic()
        sock.sendall(PREDICT)
        # One more header line every 0.2 s, never the end of the headers, until the
        # server answers.
        for i in range(100):
            with contextlib.suppress(OSError):  # the server may have closed already
                sock.sendall(b"X-Slow-%d: 1\r\n" % i)
            if select.select([sock], [], [], 0.2)[0]:
                break
        answer = read_all(sock)
        elapsed = time.monotonic() - start
    assert status_of(answer) == 408
    error = error_of(answer)
    assert error["code"] == "request_timeout"
    assert "header_timeout_s=1" in str(error["message"])
    assert b"connection: close" in answer
    assert elapsed >= 0.9  # (the loop clock has millisecond steps)


def test_a_connection_that_sends_nothing_is_closed(server: Serve) -> None:
    with server.connect() as sock:
        start = time.monotonic()
        assert read_all(sock) == b""  # closed, nothing said
        assert time.monotonic() - start >= 0.9  # (the loop clock has millisecond steps)


def test_slow_body_is_cut_at_the_body_timeout(server: Serve) -> None:
    with server.connect() as sock:
        sock.sendall(HEAD + BODY[:5])
        start = time.monotonic()
        answer = read_all(sock)
        elapsed = time.monotonic() - start
    assert status_of(answer) == 408
    assert "body_timeout_s=1" in str(error_of(answer)["message"])
    assert elapsed >= 0.9


def test_a_request_answered_before_its_body_is_closed_without_a_second_answer(
    server: Serve,
) -> None:
    with server.connect() as sock:
        # Not JSON: refused (415) before the body is read; the body then stalls.
        sock.sendall(PREDICT + b"Content-Type: text/plain\r\nContent-Length: 100\r\n\r\nab")
        assert status_of(read_response(sock)) == 415
        assert read_all(sock) == b""  # closed at the body timeout, no 408 after the 415


def test_prompt_requests_on_one_connection_are_answered(server: Serve) -> None:
    with server.connect() as sock:
        for _ in range(3):
            sock.sendall(HEAD + BODY)
            answer = read_response(sock)
            assert status_of(answer) == 200
            assert b'"forecast"' in answer
        # Then idle: closed at the keep-alive timeout, without a word.
        start = time.monotonic()
        assert read_all(sock) == b""
        assert time.monotonic() - start >= 0.9


def test_an_answer_leaves_in_one_write(server: Serve) -> None:
    """The head and the body are written together: the first read after a request
    holds the whole answer (one write of a few hundred bytes is one loopback segment)."""
    with server.connect() as sock:
        for _ in range(20):
            sock.sendall(HEAD + BODY)
            first = sock.recv(65536)
            assert b"\r\n\r\n" in first, first
            head, body = first.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            assert status_of(first) == 200
            assert len(body) == length
            assert json.loads(body)["series"]


def test_headers_in_pieces_within_the_timeout_are_answered(server: Serve) -> None:
    with server.connect() as sock:
        for piece in (HEAD[:10], HEAD[10:40], HEAD[40:], BODY[:5], BODY[5:]):
            sock.sendall(piece)
            time.sleep(0.1)
        assert status_of(read_response(sock)) == 200


def test_connections_past_the_cap_are_refused(model_dir: Path, tmp_path: Path) -> None:
    with serve(model_dir, tmp_path, max_connections=2, header_timeout_s=30) as s:
        first, second = s.connect(), s.connect()
        with s.connect() as third:
            third.sendall(HEAD + BODY)
            answer = read_all(third)
        assert status_of(answer) == 503
        assert error_of(answer)["code"] == "service_unavailable"
        assert "max_connections=2" in str(error_of(answer)["message"])
        assert b"retry-after: 1" in answer
        # The two within the cap are served.
        for sock in (first, second):
            sock.sendall(HEAD + BODY)
            assert status_of(read_response(sock)) == 200
        first.close()
        # Once one has gone, a new one is taken (the server notices the close first).
        for _ in range(100):
            with s.connect() as again:
                again.sendall(HEAD + BODY)
                if status_of(read_response(again)) == 200:
                    break
            time.sleep(0.05)
        else:
            pytest.fail("no connection was taken after one closed")
        second.close()


def test_sigterm_lets_an_in_flight_request_finish_and_exits_0(
    model_dir: Path, tmp_path: Path
) -> None:
    with serve(model_dir, tmp_path, shutdown_timeout_s=30, body_timeout_s=30) as s:
        with s.connect() as sock:
            sock.sendall(HEAD + BODY[:5])
            time.sleep(0.3)  # the request has begun
            s.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            sock.sendall(BODY[5:])
            answer = read_all(sock)  # answered, then closed: the server is stopping
        assert status_of(answer) == 200
        assert b"connection: close" in answer
        assert s.proc.wait(timeout=30) == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_cuts_a_slow_client_at_the_shutdown_timeout_and_exits_0(
    model_dir: Path, tmp_path: Path, workers: int
) -> None:
    with serve(model_dir, tmp_path, shutdown_timeout_s=1, body_timeout_s=60, workers=workers) as s:
        with s.connect() as sock, s.connect() as idle:
            sock.sendall(HEAD + BODY[:5])  # and never the rest
            time.sleep(0.3)
            start = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            code = s.proc.wait(timeout=30)
            elapsed = time.monotonic() - start
            assert read_all(idle) == b""  # idle connections are closed at once
            answer = read_all(sock)
        assert code == 0
        assert elapsed >= 0.9  # the straggler had its shutdown_timeout_s
        # ... and was then told to go elsewhere.
        assert status_of(answer) == 503
        assert error_of(answer)["code"] == "shutting_down"
        assert b"retry-after: 1" in answer


def test_sigterm_on_an_idle_server_exits_0(model_dir: Path, tmp_path: Path) -> None:
    with serve(model_dir, tmp_path) as s:
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=30) == 0
