"""Predict requests answered straight from ASGI, ahead of FastAPI's middleware and routing.

Profiling the service under load showed FastAPI's per-request middleware, routing
and dependency layers costing more than the model itself for a typical request
(20 values with a state). `SeqcastApp` (service.app) hands the two predict paths to
`serve_predict`, which calls the same `answer_predict` as the FastAPI routes and
answers every error in the same JSON shape; everything else goes to FastAPI.

Middleware added to the app does not see these requests: set `fast_path` off
(SEQCAST_FAST_PATH=false) when adding middleware that must, such as auth. Paths
it does not recognise (a version that is not a positive integer, a path under a
`root_path` prefix) go to the FastAPI routes, which answer the same way.
"""

from __future__ import annotations

import logging
import re

import orjson
from starlette.types import Receive, Scope, Send

from service.api.body_limit import read_body
from service.api.errors import ApiError, error_body
from service.api.predicting import answer_predict

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/v1/models/([^/]+)/(?:versions/([1-9][0-9]{0,8})/)?predict$")
_JSON = (b"content-type", b"application/json")


def match_predict(scope: Scope) -> re.Match[str] | None:
    """The name (group 1) and version (group 2 or None) of a predict request, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    return _PATH.match(scope["path"])


async def serve_predict(
    scope: Scope, receive: Receive, send: Send, match: re.Match[str], max_body_bytes: int
) -> None:
    """Answer one predict request; never raises (errors are answered in the error shape)."""
    name, version = match.group(1), match.group(2)
    try:
        state = scope["state"]
        body = await read_body(scope, receive, max_body_bytes)
        answer = await answer_predict(
            state["repository"], state["settings"], name, int(version) if version else None, body
        )
        status = 200
    except ApiError as exc:
        status = exc.status
        answer = orjson.dumps(error_body(exc.status, exc.code, exc.message, exc.field, exc.extra))
    except Exception:
        log.exception("unhandled error on POST %s", scope["path"])
        status = 500
        answer = orjson.dumps(error_body(500, "internal_error", "internal server error"))
    headers = [_JSON, (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})
