"""Session observe requests answered straight from ASGI, like predict (see api/fast_path.py).

An observe is the hot path of a stream, and FastAPI's middleware, routing and
dependency layers cost more than the step itself. `SeqcastApp` hands
``POST /v1/sessions/{id}/observe`` here; it calls the same `answer_observe` as
the FastAPI route and answers errors in the same shape with the same headers.
"""

from __future__ import annotations

import logging
import re

import orjson
from starlette.types import Receive, Scope, Send

from service.api.body_limit import read_body
from service.api.errors import ApiError, error_body
from service.api.routes.sessions import answer_observe

log = logging.getLogger(__name__)

# Session ids are URL-safe base64; anything else takes the FastAPI route.
_PATH = re.compile(r"^/v1/sessions/([A-Za-z0-9_-]{1,128})/observe$")
_JSON = (b"content-type", b"application/json")
_REPLAYED = (b"seqcast-replayed", b"true")


def match_observe(scope: Scope) -> re.Match[str] | None:
    """The session id (group 1) of an observe request, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    return _PATH.match(scope["path"])


async def serve_observe(
    scope: Scope, receive: Receive, send: Send, match: re.Match[str], max_body_bytes: int
) -> None:
    """Answer one observe request; never raises (errors are answered in the error shape)."""
    headers = [_JSON]
    try:
        state = scope["state"]
        body = await read_body(scope, receive, max_body_bytes)
        result = await answer_observe(state["sessions"], state["settings"], match.group(1), body)
        status, answer = 200, result.body
        if result.replayed:
            headers.append(_REPLAYED)
    except ApiError as exc:
        status = exc.status
        answer = orjson.dumps(error_body(exc.status, exc.code, exc.message, exc.field, exc.extra))
        headers += [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
    except Exception:
        log.exception("unhandled error on POST %s", scope["path"])
        status = 500
        answer = orjson.dumps(error_body(500, "internal_error", "internal server error"))
    headers.append((b"content-length", str(len(answer)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})
