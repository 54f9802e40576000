"""The hot paths (predict, observe) answered straight from ASGI, ahead of FastAPI.

Profiling the service under load showed FastAPI's per-request middleware, routing
and dependency layers costing more than the model itself for a typical request
(20 values with a state). `SeqcastApp` (service.app) looks each POST up in
`_ROUTES`; a match is answered here by the same `answer_*` function its FastAPI
route calls, with every error in the same JSON shape; everything else goes to
FastAPI.

Middleware added to the app does not see these requests: set `fast_path` off
(SEQCAST_FAST_PATH=false) when adding middleware that must, such as auth. Paths
it does not recognise (a version that is not a positive integer, a path under a
`root_path` prefix) go to the FastAPI routes, which answer the same way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from service.api.body_limit import read_body
from service.api.errors import ApiError, error_body
from service.api.predicting import answer_predict
from service.api.routes.sessions import answer_observe

log = logging.getLogger(__name__)

_JSON = (b"content-type", b"application/json")
_REPLAYED = (b"seqcast-replayed", b"true")

Headers = list[tuple[bytes, bytes]]
# (lifespan state, path match, raw body) -> (answer bytes, extra headers); raises ApiError.
Handler = Callable[[dict[str, Any], re.Match[str], bytes], Awaitable[tuple[bytes, Headers]]]


async def _predict(
    state: dict[str, Any], match: re.Match[str], body: bytes
) -> tuple[bytes, Headers]:
    name, version = match.group(1), match.group(2)
    answer = await answer_predict(
        state["repository"],
        state["settings"],
        state["runner"],
        name,
        int(version) if version else None,
        body,
    )
    return answer, []


async def _observe(
    state: dict[str, Any], match: re.Match[str], body: bytes
) -> tuple[bytes, Headers]:
    result = await answer_observe(state["sessions"], state["settings"], match.group(1), body)
    return result.body, [_REPLAYED] if result.replayed else []


_ROUTES: tuple[tuple[re.Pattern[str], Handler], ...] = (
    (re.compile(r"^/v1/models/([^/]+)/(?:versions/([1-9][0-9]{0,8})/)?predict$"), _predict),
    # Session ids are URL-safe base64; anything else takes the FastAPI route.
    (re.compile(r"^/v1/sessions/([A-Za-z0-9_-]{1,128})/observe$"), _observe),
)


def match_fast_path(scope: Scope) -> tuple[Handler, re.Match[str]] | None:
    """The handler and path match of a request the fast path answers, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    for pattern, handler in _ROUTES:
        match = pattern.match(scope["path"])
        if match is not None:
            return handler, match
    return None


async def serve_fast_path(
    scope: Scope,
    receive: Receive,
    send: Send,
    found: tuple[Handler, re.Match[str]],
    max_body_bytes: int,
) -> None:
    """Answer one matched request; never raises (errors are answered in the error shape)."""
    handler, match = found
    headers: Headers = [_JSON]
    try:
        body = await read_body(scope, receive, max_body_bytes)
        answer, extra = await handler(scope["state"], match, body)
        status = 200
        headers += extra
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
