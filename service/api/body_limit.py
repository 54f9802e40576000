"""Refuse request bodies over `max_body_bytes` before reading them into memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import ApiError, error_response


class BodyLimitMiddleware:
    """413 from Content-Length when it is declared, and while streaming when it is not."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    response = error_response(400, "bad_request", "invalid Content-Length header")
                    await response(scope, receive, send)
                    return
                if declared > self.limit:
                    await self._too_large()(scope, receive, send)
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the route's body read, so the error handlers answer it.
                    raise ApiError(413, "body_too_large", too_large_message(self.limit))
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> ASGIApp:
        return error_response(413, "body_too_large", too_large_message(self.limit))


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, or a 413 once it is known to exceed `limit` bytes."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            if not value.isdigit():
                raise ApiError(400, "bad_request", "invalid Content-Length header")
            if int(value) > limit:
                raise ApiError(413, "body_too_large", too_large_message(limit))
            break
    chunks = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "bad_request", "the client disconnected before the body ended")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", too_large_message(limit))
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large_message(limit: int) -> str:
    return f"request body is larger than the limit max_body_bytes={limit}"
