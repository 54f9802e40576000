"""One JSON error shape for every 4xx and 5xx answer.

    {"error": {"status": 422, "code": "invalid_value", "message": "...",
               "field": "series[0].values[3]"}}

`field` is null when no single field is at fault.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}
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


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    body = error_body(status, code, message, field, extra)
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def error_body(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The error shape as a dict (also sent as a WebSocket error frame)."""
    error: dict[str, Any] = {"status": status, "code": code, "message": message, "field": field}
    if extra:
        error.update(extra)
    return {"error": error}


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


def install_error_handlers(app: FastAPI) -> None:
    """Route every error FastAPI, Starlette or seqcast raises through error_response."""

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers, exc.extra)

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), None, exc.headers)

    async def request_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError | ValidationError)
        err = from_validation_errors(exc.errors())
        return error_response(err.status, err.code, err.message, err.field)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(ValidationError, request_validation)
    app.add_exception_handler(Exception, unexpected)
