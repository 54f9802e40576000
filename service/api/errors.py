"""One JSON error shape for every 4xx and 5xx answer.

    {"error": {"status": 422, "code": "invalid_value", "message": "...",
               "field": "series[0].values[3]"}}

`field` is null when no single field is at fault.

Under /v2 (the Open Inference Protocol) the same errors take that protocol's form,
`{"error": "<message>"}`, with 400 where seqcast's own API says 422 (service.oip); the
front door marks those requests (OIP_SCOPE_KEY) and every renderer here follows the mark.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from service.inputs import InputError
from service.redaction import redact, redacted_path
from service.runner import Overloaded
from service.sessions.manager import OffsetConflict, SessionNotFound, VersionGone
from service.sessions.store import QuotaExceeded, SessionExists, StoreFull, StoreUnavailable

log = logging.getLogger(__name__)

OIP_SCOPE_KEY = "seqcast.oip"  # set by the front door on /v2 requests: errors in OIP's form

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
_PYDANTIC_CODES = {
    "json_invalid": "invalid_json",
    "json_type": "invalid_json",
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
}
# Union branch tags and request parts (body, path, query) that pydantic and FastAPI put
# into error locations; a client names fields without them.
_HIDDEN_LOC_PARTS = frozenset({"numbers", "rows", "body", "path", "query"})


class ApiError(Exception):
    """An answer other than success, raised anywhere below a route."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers
        # More members of the error object, e.g. the current offset of a 409 on a session.
        self.extra = extra


def error_json(err: ApiError) -> bytes:
    """The one error shape, as bytes: HTTP bodies and WebSocket frames alike."""
    error: dict[str, Any] = {
        "status": err.status,
        "code": err.code,
        "message": redact(err.message),
        "field": err.field,
    }
    if err.extra:
        error.update(err.extra)
    return orjson.dumps({"error": error})


def oip_error_json(err: ApiError) -> bytes:
    """The Open Inference Protocol's error object: the message only."""
    return orjson.dumps({"error": redact(err.message)})


def rendered(err: ApiError, scope: Mapping[str, Any] | None) -> tuple[int, bytes]:
    """Status and body of an error answer in the form of the request's protocol."""
    if scope is not None and scope.get(OIP_SCOPE_KEY):
        # OIP (and Triton) answer a request they cannot take with 400.
        return (400 if err.status == 422 else err.status), oip_error_json(err)
    return err.status, error_json(err)


def error_response(err: ApiError, scope: Mapping[str, Any] | None = None) -> Response:
    status, body = rendered(err, scope)
    return Response(body, status_code=status, headers=err.headers, media_type="application/json")


def as_api_error(exc: Exception) -> ApiError | None:
    """The answer for an error of the inputs, sessions or their store; None for others."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InputError):
        return ApiError(422, exc.code, exc.message, exc.field)
    if isinstance(exc, OffsetConflict):
        return ApiError(409, "offset_conflict", str(exc), "offset", extra={"offset": exc.current})
    if isinstance(exc, SessionNotFound):
        return ApiError(404, "session_not_found", str(exc), "session")
    if isinstance(exc, VersionGone):
        return ApiError(410, "version_gone", str(exc), "session")
    if isinstance(exc, QuotaExceeded):
        retry = str(max(1, math.ceil(exc.retry_after_s)))
        return ApiError(429, "quota_exceeded", str(exc), headers={"Retry-After": retry})
    if isinstance(exc, StoreUnavailable):
        return ApiError(503, "session_store_unavailable", str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, SessionExists):
        return ApiError(409, "session_exists", str(exc), "session")
    if isinstance(exc, StoreFull):
        return ApiError(503, "session_store_full", str(exc), headers={"Retry-After": "5"})
    if isinstance(exc, Overloaded):
        retry = str(max(1, math.ceil(exc.retry_after_s)))
        return ApiError(503, "overloaded", str(exc), headers={"Retry-After": retry})
    return None


def internal_error() -> ApiError:
    return ApiError(500, "internal_error", "internal server error")


def field_path(loc: Sequence[int | str]) -> str | None:
    """pydantic's ('series', 0, 'values', 'numbers', 3) as 'series[0].values[3]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in _HIDDEN_LOC_PARTS:
            out += f".{part}" if out else part
    return out or None


def from_validation_errors(errors: Sequence[Any]) -> ApiError:
    """The first pydantic error as an ApiError naming its field."""
    first = errors[0]
    field = field_path(first["loc"])
    code = _PYDANTIC_CODES.get(first["type"], "invalid_value")
    message = str(first["msg"])
    if code == "invalid_json":
        message = f"{message}; the body must be JSON (NaN and Infinity are not JSON numbers)"
    elif field:
        message = f"{field}: {message}"
    return ApiError(422, code, message, field)


def allowed_methods(app: FastAPI, scope: Mapping[str, Any]) -> list[str]:
    """Every method some route answers on this path (a 405's Allow header)."""
    return sorted(
        method
        for method in _METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in app.routes)
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every error FastAPI, Starlette or seqcast raises through error_response."""

    async def known(request: Request, exc: Exception) -> Response:
        err = as_api_error(exc)
        assert err is not None
        return error_response(err, request.scope)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route on the path; list them all.
            headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        err = ApiError(exc.status_code, code, str(exc.detail), None, headers)
        return error_response(err, request.scope)

    async def request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError | ValidationError)
        return error_response(from_validation_errors(exc.errors()), request.scope)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, redacted_path(request.url.path))
        return error_response(internal_error(), request.scope)

    known_kinds: tuple[type[Exception], ...] = (
        ApiError,
        InputError,
        OffsetConflict,
        SessionNotFound,
        VersionGone,
        QuotaExceeded,
        StoreUnavailable,
        StoreFull,
        SessionExists,
        Overloaded,
    )
    for kind in known_kinds:
        app.add_exception_handler(kind, known)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(ValidationError, request_validation)
    app.add_exception_handler(Exception, unexpected)
