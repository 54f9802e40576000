"""The one request-body reader and its one limit rule (`max_body_bytes`).

The front door checks a declared Content-Length before anything is read; the
reader counts what actually arrives, so a body without a length (chunked) or one
longer than declared is cut off at the same limit.
"""

from __future__ import annotations

from starlette.types import Message, Receive

from service.api.errors import ApiError


def too_large(limit: int, what: str = "request body") -> ApiError:
    return ApiError(
        413, "body_too_large", f"{what} is larger than the limit max_body_bytes={limit}"
    )


def check_length(declared: bytes, limit: int) -> None:
    """A Content-Length value: digits only, at most `limit`."""
    if not declared.isdigit() or len(declared) > 19:
        raise ApiError(400, "bad_request", "invalid Content-Length header", "Content-Length")
    if int(declared) > limit:
        raise too_large(limit)


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or a 413 once it is known to exceed `limit` bytes."""
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
            raise too_large(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def limited(receive: Receive, limit: int) -> Receive:
    """`receive` for a route that reads the body itself: the same limit, counted."""
    received = 0

    async def receive_limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large(limit)
        return message

    return receive_limited
