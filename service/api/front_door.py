"""The front door: one outer ASGI layer that every HTTP and WebSocket request passes.

In order, for every request before any route:

1. request id: `X-Request-ID` taken from the client (when well formed) or made, put
   on the answer and on every log line written while the request is handled;
2. browser safety: a request carrying an `Origin` that is neither the service's own
   host nor listed in SEQCAST_ALLOWED_ORIGINS gets 403 (listed origins get CORS
   headers, and their preflights are answered here);
3. API keys, when configured: `Authorization: Bearer`, `X-API-Key`, or for browsers
   on the WebSocket the subprotocol `seqcast.key.<key>`; 401 otherwise;
4. a POST body must be JSON (415) and its declared length within the limit (413); under
   /v2 (the Open Inference Protocol) also binary (application/octet-stream) or untyped,
   as tritonclient sends it, and errors take that protocol's form (service.api.errors);
5. dispatch: a route with a JSON body (service.api.body_routes) is answered here with
   the one body reader; every other request goes to the FastAPI app.

Observers (the access log; metrics and tracing later) see every request's start and
end, whichever way it was answered.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Protocol

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from service.api.auth import WS_KEY_PROTOCOL, ApiKeys
from service.api.body import check_length, limited, read_body
from service.api.body_routes import BodyRoute, Call, convert_params, declared_routes
from service.api.errors import (
    OIP_SCOPE_KEY,
    ApiError,
    as_api_error,
    error_json,
    internal_error,
    rendered,
)
from service.api.paths import exempt_paths
from service.api.state import OWNER_KEY, app_state, owner_of
from service.inputs import shown
from service.redaction import redacted_path, request_id_var
from service.settings import Settings
from service.telemetry.context import REQUEST_INFO, RequestInfo, request_info_var, request_model

log = logging.getLogger(__name__)
access_log = logging.getLogger("seqcast.access")

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")
_JSON = (b"content-type", b"application/json")
# What a /v2 POST body may say it is besides JSON: the binary tensor extension's type, or
# nothing at all (tritonclient's HTTP client sends no Content-Type).
_OIP_MEDIA = frozenset({None, b"application/octet-stream"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_PREFLIGHT = b"access-control-request-method"
# Inference-Header-Content-Length: the Open Inference Protocol's binary bodies (/v2).
_CORS_ALLOW_HEADERS = (
    b"authorization, content-type, x-api-key, x-request-id, inference-header-content-length"
)
_CORS_EXPOSE_HEADERS = (
    b"x-request-id, seqcast-replayed, retry-after, location, inference-header-content-length"
)


class RequestObserver(Protocol):
    """Sees every request that passes the front door (metrics, tracing, access log).

    `request_started` is called only on observers whose `needs_start` is true."""

    needs_start: bool

    def request_started(self, scope: Scope) -> None: ...

    def request_ended(self, scope: Scope, status: int, seconds: float) -> None: ...


class AccessLog:
    """One line per request; session ids in paths appear as short tags."""

    needs_start = False

    def request_started(self, scope: Scope) -> None:
        pass

    def request_ended(self, scope: Scope, status: int, seconds: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        method = scope.get("method", "WS")
        path = redacted_path(scope["path"])
        key = scope.get(OWNER_KEY) or "-"
        model = request_model(scope, True)
        # The fields again, for JSON log lines (SEQCAST_LOG_FORMAT=json).
        fields = {"method": method, "path": path, "status": status, "key": key}
        fields["duration_ms"] = round(seconds * 1000, 3)
        if model is not None:
            fields["model"], fields["version"] = model.name, model.version
        access_log.info(
            "%s %s %d %.1fms key=%s", method, path, status, seconds * 1000, key, extra=fields
        )


# Request headers as a dict (ASGI names are lowercase; a repeated header's last value).
Headers = dict[bytes, bytes]


class FrontDoor:
    """The service as an ASGI app: this layer, then the declared routes or FastAPI."""

    def __init__(
        self,
        app: FastAPI,
        settings: Settings,
        keys: ApiKeys,
        observers: Sequence[RequestObserver] = (),
    ) -> None:
        self.app = app  # every route that is not declared with a JSON body
        self.settings = settings
        self.keys = keys
        self._routes = declared_routes(app)
        self._keys_on = keys.enabled
        self._limit = settings.max_body_bytes
        self._origins = frozenset(o.encode() for o in settings.origins)
        self._exempt_exact, self._exempt_prefixes = exempt_paths(settings.exempt_groups)
        self._observers = ([AccessLog()] if settings.access_log else []) + list(observers)
        self._starters = [o for o in self._observers if o.needs_start]
        # What a request's end calls: None without observers, the one observer's own
        # method, or `_ended_all`.
        self._ended: Callable[[Scope, int, float], None] | None = None
        if len(self._observers) == 1:
            self._ended = self._observers[0].request_ended
        elif self._observers:
            self._ended = self._ended_all
        self.in_flight = 0  # requests and WebSocket connections being handled now
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        headers: Headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id")
        if rid is None or not _REQUEST_ID.match(rid):
            rid = b"%s-%x" % (self._id_prefix, next(self._ids))
        token = request_id_var.set(rid.decode())
        if _is_oip(_route_path(scope)):
            scope[OIP_SCOPE_KEY] = True
        # The work layers note the model version they run here (service.telemetry.context).
        info = scope[REQUEST_INFO] = RequestInfo()
        info_token = request_info_var.set(info)
        added = [(b"x-request-id", rid)]
        origin = headers.get(b"origin")
        cors = origin is not None and origin in self._origins
        if cors:
            assert origin is not None
            added += [
                (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", _CORS_EXPOSE_HEADERS),
                (b"vary", b"Origin"),
            ]
        self.in_flight += 1
        started = perf_counter() if self._observers else 0.0
        for observer in self._starters:
            observer.request_started(scope)
        status = 0
        try:
            found = self._match(scope)
            if found is not None:
                # A declared route, answered right here: the hot path, kept flat.
                status = await self._serve(scope, receive, send, headers, cors, added, *found)
            else:
                status = await self._forward(scope, receive, send, headers, cors, added)
        finally:
            self.in_flight -= 1
            ended = self._ended
            if ended is not None:
                try:
                    ended(scope, status, perf_counter() - started)
                except Exception:  # an observer's bug must not fail the request
                    log.exception("request observer %r failed", ended)
            request_info_var.reset(info_token)
            request_id_var.reset(token)

    def _ended_all(self, scope: Scope, status: int, seconds: float) -> None:
        """Several observers: each sees the request's end, whatever the others do."""
        for observer in self._observers:
            try:
                observer.request_ended(scope, status, seconds)
            except Exception:  # one observer's bug must not cost the others
                log.exception("request observer %r failed", observer)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: Headers,
        cors: bool,
        added: list[tuple[bytes, bytes]],
    ) -> int:
        """Everything but the declared routes: admitted here, then answered by FastAPI."""
        status = 0

        async def reply(message: Message) -> None:
            # Every answer, whoever sends it, carries the request id (and CORS headers).
            nonlocal status
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *added]}
            elif kind == "websocket.accept":
                status = 101
                message = {**message, "headers": [*message.get("headers", ()), *added[:1]]}
            await send(message)

        http = scope["type"] == "http"
        if cors and http and scope["method"] == "OPTIONS" and _PREFLIGHT in headers:
            await _send_preflight(reply)
            return status
        try:
            self._admit(scope, headers, cors)
        except ApiError as err:
            if http:
                await _send_error(reply, err, scope)
            else:
                await _deny_websocket(scope, receive, reply, err)
            return status
        if http and scope["method"] in _BODY_METHODS:
            receive = limited(receive, self._limit)
        await self.app(scope, receive, reply)
        return status

    def _match(self, scope: Scope) -> tuple[BodyRoute, dict[str, str]] | None:
        """The declared route and path parameters of a POST, with FastAPI's own route
        patterns; a path they do not match (or another method) goes to FastAPI."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path = _route_path(scope)
        for route, declared in self._routes:
            match = route.path_regex.match(path)
            if match is not None:
                scope["route"] = route
                params = scope["path_params"] = match.groupdict()  # as Starlette's routes
                return declared, params
        return None

    def _admit(self, scope: Scope, headers: Headers, cors: bool) -> None:
        """Raise the ApiError that refuses this request, if any; note its key's name."""
        origin = headers.get(b"origin")
        if origin is not None and not cors and not _same_host(origin, headers.get(b"host")):
            raise ApiError(
                403,
                "origin_not_allowed",
                f"requests from origin {shown(origin.decode('latin-1'))!r} are not "
                "allowed; list it in SEQCAST_ALLOWED_ORIGINS",
                "Origin",
            )
        if self._keys_on and not self._exempt(scope["path"]):
            presented = _presented_key(headers, scope["type"] == "websocket")
            name = self.keys.identify(presented) if presented is not None else None
            if name is None:
                raise ApiError(
                    401,
                    "unauthorized",
                    "a valid API key is required: send Authorization: Bearer <key> or "
                    "X-API-Key: <key>" + (" (missing)" if presented is None else " (not valid)"),
                    "Authorization",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            scope[OWNER_KEY] = name
        if scope["type"] == "http" and scope["method"] in _BODY_METHODS:
            length = headers.get(b"content-length")
            if length is not None and not (length.isdigit() and int(length) <= self._limit):
                check_length(length, self._limit)  # raises the 400 or 413
            has_body = length not in (None, b"0") or b"transfer-encoding" in headers
            content_type = headers.get(b"content-type")
            if has_body and not _is_json(content_type):
                if OIP_SCOPE_KEY not in scope:
                    raise ApiError(
                        415,
                        "unsupported_media_type",
                        "the body must be JSON: send Content-Type: application/json",
                        "Content-Type",
                    )
                if not _oip_media(content_type):
                    raise ApiError(
                        415,
                        "unsupported_media_type",
                        "the body must be JSON, or JSON followed by binary tensors: send "
                        "Content-Type: application/json or application/octet-stream",
                        "Content-Type",
                    )

    def _exempt(self, path: str) -> bool:
        return path in self._exempt_exact or path.startswith(self._exempt_prefixes)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: Headers,
        cors: bool,
        added: list[tuple[bytes, bytes]],
        declared: BodyRoute,
        params: dict[str, str],
    ) -> int:
        """Admit and answer a declared route; returns the status. Never raises: errors
        are answered in the error shape."""
        try:
            self._admit(scope, headers, cors)
            converted = convert_params(declared, params)
            body = await read_body(receive, self._limit)
            call = Call(app_state(scope), converted, body, owner_of(scope), headers)
            answer = await declared.handler(call)
        except Exception as exc:
            err = as_api_error(exc)
            if err is None:
                log.exception("unhandled error on POST %s", redacted_path(scope["path"]))
                err = internal_error()
            status, body = rendered(err, scope)
            out = _error_headers(err, body) + added
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": body})
            return status
        kind = _JSON if answer.media_type is None else (b"content-type", answer.media_type)
        out = [kind, (b"content-length", str(len(answer.body)).encode()), *added]
        if answer.headers:
            out += [(k.lower().encode(), v.encode()) for k, v in answer.headers]
        await send({"type": "http.response.start", "status": answer.status, "headers": out})
        await send({"type": "http.response.body", "body": answer.body})
        return answer.status


def _route_path(scope: Scope) -> str:
    """The path routes match against: without the root_path prefix (as Starlette's)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path


def _is_oip(path: str) -> bool:
    """Whether a path (without root_path) is under /v2, the Open Inference Protocol."""
    return path == "/v2" or path.startswith("/v2/")


def _oip_media(content_type: bytes | None) -> bool:
    if content_type is None:
        return True
    kind = content_type.split(b";", 1)[0].strip().lower()
    return not kind or kind in _OIP_MEDIA


def _same_host(origin: bytes, host: bytes | None) -> bool:
    """The page that sent it was served by this host (scheme://host[:port] == Host)."""
    _, sep, origin_host = origin.partition(b"://")
    return bool(sep) and host is not None and origin_host == host


def _presented_key(headers: Headers, websocket: bool) -> bytes | None:
    authorization = headers.get(b"authorization")
    if authorization is not None and authorization[:7].lower() == b"bearer ":
        token = authorization[7:].strip()
        if token:
            return token
    api_key = headers.get(b"x-api-key")
    if api_key is not None:
        return api_key.strip()
    protocols = headers.get(b"sec-websocket-protocol")
    if websocket and protocols is not None:
        prefix = WS_KEY_PROTOCOL.encode()
        for offered in protocols.split(b","):
            offered = offered.strip()
            if offered.startswith(prefix):
                return offered[len(prefix) :]
    return None


def _is_json(content_type: bytes | None) -> bool:
    if content_type == b"application/json":
        return True
    if content_type is None:
        return False
    kind = content_type.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (
        kind.startswith(b"application/") and kind.endswith(b"+json")
    )


def _error_headers(err: ApiError, body: bytes) -> list[tuple[bytes, bytes]]:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (err.headers or {}).items()]
    return headers


async def _send_error(send: Send, err: ApiError, scope: Scope) -> None:
    status, body = rendered(err, scope)
    await send(
        {"type": "http.response.start", "status": status, "headers": _error_headers(err, body)}
    )
    await send({"type": "http.response.body", "body": body})


async def _send_preflight(send: Send) -> None:
    headers = [
        (b"access-control-allow-methods", b"GET, POST, DELETE"),
        (b"access-control-allow-headers", _CORS_ALLOW_HEADERS),
        (b"access-control-max-age", b"600"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, err: ApiError) -> None:
    """Refuse a WebSocket with the error body: as an HTTP answer where the server can send
    one, else as an error frame on an accepted connection that is then closed."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    body = error_json(err)
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": err.status,
                "headers": _error_headers(err, body),
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": body.decode()})
    await send({"type": "websocket.close", "code": 1008, "reason": err.code})
