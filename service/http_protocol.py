"""uvicorn's httptools protocol with read timeouts and a connection cap.

uvicorn bounds an idle keep-alive connection (`timeout_keep_alive`) but not one that
is slow to send: a connection that opens and sends nothing, or a request's headers or
body a byte at a time, holds a socket and its file descriptor for ever, and enough of
them shut everyone out. Here every connection is in one of three reading phases, each
with a deadline:

- headers: from the connection's opening, or a later request's first byte, until its
  headers end (`header_timeout_s`);
- body: from the end of the headers until the body ends (`body_timeout_s`);
- none: a request is being answered, or the connection is idle between requests
  (uvicorn's keep-alive timeout applies).

Past a deadline the client gets 408 in the service's error shape (unless it sent
nothing, or an answer has already begun) and the connection is closed; an application
still waiting for the body sees the client disconnect. A connection beyond
`max_connections` is answered 503 and closed before its request is parsed.

On shutdown, a request still unanswered `shutdown_timeout_s` after the signal is cut
the same way, with 503: the client learns that it may retry elsewhere, and the
application finishes quietly. uvicorn's own graceful-shutdown timeout, a moment later,
only cancels what is left (a run on a worker thread still ending).

The deadlines are timers armed only when a phase outlasts one read from the socket: a
request whose headers and body arrive together, the common case, costs no timer.

An answer's status line and headers are held back and written with its first body part
(OneWriteCycle): a small answer leaves in one write, one segment that wakes the client
once, where uvicorn writes the head and the body apart.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal, cast

from uvicorn import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from service.api.errors import ApiError, error_json

log = logging.getLogger(__name__)

Phase = Literal["idle", "headers", "body"]


class BoundsConfig(Config):
    """uvicorn's Config with seqcast's read timeouts and connection cap (picklable, so
    worker processes get them too)."""

    def __init__(
        self,
        app: Any,
        *,
        header_timeout_s: float,
        body_timeout_s: float,
        shutdown_timeout_s: float,
        max_connections: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            app,
            http=BoundedHttpProtocol,
            timeout_graceful_shutdown=shutdown_timeout_s + _CANCEL_AFTER_CUT_S,  # type: ignore[arg-type]
            **kwargs,
        )
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.max_connections = max_connections


class BoundedHttpProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection, with deadlines on reading (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, BoundsConfig)
        self._timeouts = {"idle": config.header_timeout_s, "headers": config.header_timeout_s}
        self._timeouts["body"] = config.body_timeout_s
        self._max_connections = config.max_connections
        self._shutdown_timeout = config.shutdown_timeout_s
        self._phase: Phase | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            self._refused = True
            log.warning(
                "refused a connection: %d open, at the limit max_connections=%d",
                len(self.connections) - 1,
                self._max_connections,
            )
            self._reply_and_close(
                503,
                "service_unavailable",
                f"too many open connections (max_connections={self._max_connections}); retry later",
                retry_after=True,
            )
            return
        self._phase = "idle"
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            # The request has been read (and is dropped): closing now sends the client
            # an orderly end after the 503, where closing with it unread would reset the
            # connection and might discard the 503 before the client sees it.
            self.transport.close()
            return
        super().data_received(data)
        # A phase that outlasts this read gets its deadline now (once: a slow client
        # cannot push it back by sending more).
        if self._phase is not None and self._deadline is None:
            self._arm()

    # Parser callbacks: they move the phase on.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase != "idle":  # idle's deadline, from the opening, still holds
            self._disarm()
        self._phase = "headers"

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if type(self.cycle) is RequestResponseCycle:  # this request's: write its head late
            self.cycle.__class__ = OneWriteCycle
        self._disarm()
        upgrade = self.parser.should_upgrade() and self._should_upgrade()
        self._phase = None if upgrade else "body"

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._phase = None

    def shutdown(self) -> None:
        """The server is stopping: no more requests here; an unanswered one is cut at
        the shutdown timeout."""
        super().shutdown()
        if not self.transport.is_closing():
            self._disarm()
            self._phase = None
            self._deadline = self.loop.call_later(self._shutdown_timeout, self._cut)

    def _cut(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or cycle.response_complete:
            return
        log.warning("cut a request unanswered %gs after shutdown began", self._shutdown_timeout)
        if cycle.response_started:
            self.transport.close()
        else:
            message = f"the server is shutting down (shutdown_timeout_s={self._shutdown_timeout:g})"
            self._reply_and_close(503, "shutting_down", message, retry_after=True)
        cycle.disconnected = True
        cycle.message_event.set()

    def _arm(self) -> None:
        assert self._phase is not None
        self._deadline = self.loop.call_later(self._timeouts[self._phase], self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        phase = self._phase
        if phase is None or self.transport.is_closing():
            return
        if phase == "idle":
            # Nothing was asked: just hang up, as after an idle keep-alive.
            self.transport.close()
            return
        cycle = self.cycle
        if phase == "headers" and cycle is not None and not cycle.response_complete:
            # A pipelined request's headers stall while the one before is answered: let
            # that answer finish, then close instead of reading on.
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        what = "headers" if phase == "headers" else "body"
        limit = "header_timeout_s" if phase == "headers" else "body_timeout_s"
        log.info(
            "closed a connection from %s: the request %s did not arrive within %s=%g",
            self.client[0] if self.client else "?",
            what,
            limit,
            self._timeouts[phase],
        )
        message = f"the request {what} did not arrive within {limit}={self._timeouts[phase]:g}"
        # In the headers phase `cycle` is the request before (answered, or none); in the
        # body phase it is this one, which may have been answered already (a 413 or a
        # 401 does not wait for the body): then there is nothing more to say.
        if phase == "headers" or (cycle is not None and not cycle.response_started):
            self._reply_and_close(408, "request_timeout", message)
        else:
            self.transport.close()
        if cycle is not None and not cycle.response_complete:
            # The application, waiting for the rest of the body, sees a disconnect.
            cycle.disconnected = True
            cycle.message_event.set()

    def _reply_and_close(
        self, status: int, code: str, message: str, *, retry_after: bool = False
    ) -> None:
        body = error_json(ApiError(status, code, message))
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: %d\r\n" % len(body))
        if retry_after:
            head.append(b"retry-after: 1\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        if self._refused:
            # Closed when the request arrives (data_received), or when none does.
            self._phase = "idle"
            self._arm()
        else:
            self.transport.close()


class OneWriteCycle(RequestResponseCycle):
    """uvicorn's response cycle, with the answer's head written together with the first
    part of its body (or alone, when the answer has no body to write: HEAD)."""

    _held: bytes | None = None  # the head, encoded by uvicorn and not yet written

    async def send(self, message: Any) -> None:
        held = self._held
        if held is None and message["type"] == "http.response.start":
            hold = _Hold(self.transport)
            # uvicorn encodes the head and writes it: here, to `hold`.
            self.transport = cast(asyncio.Transport, hold)
            try:
                await super().send(message)
            finally:
                self.transport = hold.transport
            self._held = hold.data
            return
        if held is None:
            await super().send(message)
            return
        self._held = None
        ahead = _Ahead(self.transport, held)
        self.transport = cast(asyncio.Transport, ahead)
        try:
            await super().send(message)
        finally:
            self.transport = ahead.transport
            if ahead.head is not None and self.response_complete and not self.disconnected:
                ahead.transport.write(ahead.head)  # nothing written after it (HEAD)


class _Hold:
    """A transport stand-in that keeps what is written."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.data: bytes | None = None

    def write(self, data: bytes) -> None:
        self.data = data if self.data is None else self.data + data


class _Ahead:
    """The transport, with `head` written in front of the first write (or at a close)."""

    def __init__(self, transport: Any, head: bytes) -> None:
        self.transport = transport
        self.head: bytes | None = head

    def write(self, data: bytes) -> None:
        head, self.head = self.head, None
        if head is None:
            self.transport.write(data)
        elif len(data) <= _JOIN_MAX:
            self.transport.write(head + data)
        else:
            self.transport.writelines((head, data))  # no copy of a large body

    def close(self) -> None:
        head, self.head = self.head, None
        if head is not None:
            self.transport.write(head)
        self.transport.close()


# A body up to this size is joined to the head (one buffer); a larger one goes beside it.
_JOIN_MAX = 64 * 1024

_REASONS = {408: b"Request Timeout", 503: b"Service Unavailable"}
# After the cut at shutdown_timeout_s, how long the cut requests have to end before
# uvicorn cancels them.
_CANCEL_AFTER_CUT_S = 0.5
