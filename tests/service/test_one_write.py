"""service.http_protocol.OneWriteCycle: an answer's head leaves with its first body part."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from uvicorn.protocols.http.flow_control import FlowControl

from service.http_protocol import OneWriteCycle


class Recorder:
    """Stands in for the connection's transport: records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, parts: Any) -> None:
        self.calls.append(("writelines", list(parts)))

    def close(self) -> None:
        self.calls.append(("close", None))

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _cycle(method: str = "POST", keep_alive: bool = True) -> tuple[OneWriteCycle, Recorder]:
    recorder = Recorder()
    transport = cast(asyncio.Transport, recorder)
    scope: Any = {"method": method, "http_version": "1.1", "path": "/", "query_string": b""}
    log = logging.getLogger("test")
    cycle = OneWriteCycle(
        scope, transport, FlowControl(transport), log, log, False, [], asyncio.Event(),
        False, keep_alive, lambda: None,
    )  # fmt: skip
    return cycle, recorder


def _start(length: int | None) -> dict[str, Any]:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return {"type": "http.response.start", "status": 200, "headers": headers}


def test_head_and_body_in_one_write() -> None:
    cycle, recorder = _cycle()

    async def answer() -> None:
        await cycle.send(_start(5))
        assert recorder.calls == []  # held
        await cycle.send({"type": "http.response.body", "body": b"hello"})

    asyncio.run(answer())
    assert len(recorder.calls) == 1
    kind, data = recorder.calls[0]
    assert kind == "write"
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\nhello")
    assert cycle.response_complete


def test_a_head_request_writes_the_head_alone() -> None:
    cycle, recorder = _cycle("HEAD")

    async def answer() -> None:
        await cycle.send(_start(5))
        await cycle.send({"type": "http.response.body", "body": b""})

    asyncio.run(answer())
    assert [kind for kind, _ in recorder.calls] == ["write"]
    assert recorder.calls[0][1].endswith(b"content-length: 5\r\n\r\n")


def test_a_streamed_answer_joins_only_its_first_part() -> None:
    cycle, recorder = _cycle()

    async def answer() -> None:
        await cycle.send(_start(None))  # chunked
        await cycle.send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await cycle.send({"type": "http.response.body", "body": b"cd", "more_body": False})

    asyncio.run(answer())
    writes = [data for kind, data in recorder.calls if kind == "write"]
    assert len(writes) == 2
    assert b"transfer-encoding: chunked" in writes[0]
    assert writes[0].endswith(b"2\r\nab\r\n")
    assert writes[1] == b"2\r\ncd\r\n0\r\n\r\n"


def test_a_large_body_goes_beside_the_head_uncopied() -> None:
    cycle, recorder = _cycle()
    body = b"x" * (1 << 20)

    async def answer() -> None:
        await cycle.send(_start(len(body)))
        await cycle.send({"type": "http.response.body", "body": body})

    asyncio.run(answer())
    [(kind, parts)] = recorder.calls
    assert kind == "writelines"
    assert parts[0].endswith(b"\r\n\r\n")
    assert parts[1] is body


def test_connection_close_writes_the_head_before_closing() -> None:
    cycle, recorder = _cycle(keep_alive=False)

    async def answer() -> None:
        await cycle.send(_start(2))
        await cycle.send({"type": "http.response.body", "body": b"ok"})

    asyncio.run(answer())
    assert [kind for kind, _ in recorder.calls] == ["write", "close"]
    assert b"connection: close" in recorder.calls[0][1]
    assert recorder.calls[0][1].endswith(b"ok")


def test_a_disconnected_client_gets_nothing() -> None:
    cycle, recorder = _cycle()

    async def answer() -> None:
        await cycle.send(_start(2))
        cycle.disconnected = True
        await cycle.send({"type": "http.response.body", "body": b"ok"})

    asyncio.run(answer())
    assert recorder.calls == []
