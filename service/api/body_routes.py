"""Routes with a JSON body, each declared once: the front door answers them directly,
and the same declaration gives FastAPI its route, which service.api.openapi describes with
a body schema for each served model.

Profiling showed FastAPI's routing and dependency layers costing more than the model
for a typical request, so the front door (service.api.front_door) matches these routes
itself, with the very route objects FastAPI would use, reads the body with the one
body reader and calls the handler. The FastAPI route calls the same handler, so
whichever way a request arrives it gets the same answer.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from service.api.body import read_body
from service.api.errors import ApiError, from_validation_errors
from service.api.schemas import ErrorResponse
from service.api.state import AppState, app_state, owner_of

_Body = TypeVar("_Body", bound=BaseModel)


# Plain (not frozen) slotted classes: built once per request on the hot path, where a
# frozen dataclass's __init__ costs several times more.
@dataclass(slots=True)
class Call:
    """One request to a declared route, as its handler sees it."""

    state: AppState
    params: Mapping[str, Any]  # path parameters, converted
    body: bytes
    owner: str  # name of the API key that sent it ("" when keys are off)
    # Request headers, lowercase names (a repeated header's last value).
    headers: Mapping[bytes, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class Answer:
    body: bytes  # JSON, unless media_type says otherwise
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    media_type: bytes | None = None  # None: application/json


Handler = Callable[[Call], Awaitable[Answer]]


@dataclass(frozen=True)
class BodyRoute:
    """A POST route whose JSON body seqcast validates itself (pydantic's Rust path)."""

    path: str  # e.g. /v1/models/{name}/versions/{version}/predict
    params: Mapping[str, Any]  # path parameter -> its type: str, int or Annotated str
    request: type[BaseModel]  # the body's schema
    response: type[BaseModel]
    handler: Handler
    summary: str
    tags: tuple[str, ...]
    status_code: int = 200
    errors: tuple[int, ...] = (404, 413, 415, 422)
    body_required: bool = True
    name: str = field(default="")
    in_schema: bool = True  # described in /openapi.json (/v2 follows its own protocol's)

    @cached_property
    def int_params(self) -> bool:
        """Whether a path parameter must be converted to int (convert_params)."""
        return int in self.params.values()


def model_routes(action: str, summary: str, **fields: Any) -> list[BodyRoute]:
    """The pair of declarations of an action on a model: on its default (highest) version,
    /v1/models/{name}/<action>, and on one version, .../versions/{version}/<action>.
    `summary` has a `{which}` for "the default (highest) version" or "one version"."""
    return [
        BodyRoute(
            path=f"/v1/models/{{name}}/{action}",
            params={"name": str},
            summary=summary.format(which="the default (highest) version"),
            name=action,
            **fields,
        ),
        BodyRoute(
            path=f"/v1/models/{{name}}/versions/{{version}}/{action}",
            params={"name": str, "version": int},
            summary=summary.format(which="one version"),
            name=f"{action}_version",
            **fields,
        ),
    ]


def parse_body(kind: type[_Body], body: bytes, *, empty_ok: bool = False) -> _Body:
    """Validate raw JSON in pydantic's Rust path, or raise a 422 naming the field."""
    if not body or body.isspace():  # isspace: no copy of a large body
        if empty_ok:
            return kind()
        raise ApiError(422, "invalid_json", "the request body is empty; send a JSON object")
    try:
        # The validator itself: model_validate_json adds a Python layer per call.
        parsed: _Body = kind.__pydantic_validator__.validate_json(body)
        return parsed
    except ValidationError as exc:
        raise from_validation_errors(exc.errors()) from None


_DIGITS = re.compile(r"^[0-9]{1,9}$")


def int_param(name: str, raw: str) -> int:
    """A path or query parameter that must be a whole number (a version), else a 422."""
    if not _DIGITS.match(raw):
        raise ApiError(422, "invalid_value", f"{name} must be a positive integer", name)
    return int(raw)


def convert_params(route: BodyRoute, raw: Mapping[str, str]) -> Mapping[str, Any]:
    """Path parameters as the handler takes them; an int that is not one is a 422."""
    if not route.int_params:
        return raw  # strings only: nothing to convert
    params: dict[str, Any] = dict(raw)
    for name, kind in route.params.items():
        if kind is int:
            params[name] = int_param(name, raw[name])
    return params


def add_body_routes(router: APIRouter, routes: list[BodyRoute]) -> None:
    """Each declaration as a FastAPI route (the OpenAPI description and a way in)."""
    for route in routes:
        router.add_api_route(
            route.path,  # int parameters: positive, as convert_params checks
            _endpoint(route),
            methods=["POST"],
            status_code=route.status_code,
            response_model=route.response,
            responses={code: {"model": ErrorResponse} for code in route.errors},
            summary=route.summary,
            description=route.summary,
            tags=list(route.tags),
            name=route.name or None,
            include_in_schema=route.in_schema,
        )


def declared_routes(app: FastAPI) -> list[tuple[APIRoute, BodyRoute]]:
    """The app's routes made by add_body_routes, each with its declaration."""
    found = []
    for route in app.router.routes:
        declared = getattr(getattr(route, "endpoint", None), "body_route", None)
        if isinstance(route, APIRoute) and isinstance(declared, BodyRoute):
            found.append((route, declared))
    return found


def _endpoint(route: BodyRoute) -> Callable[..., Awaitable[Response]]:
    async def endpoint(request: Request, **params: Any) -> Response:
        state = app_state(request.scope)
        body = await read_body(request.receive, state.settings.max_body_bytes)
        headers = dict(request.scope["headers"])
        answer = await route.handler(Call(state, params, body, owner_of(request.scope), headers))
        return Response(
            answer.body,
            status_code=answer.status,
            headers=dict(answer.headers),
            media_type=(answer.media_type or b"application/json").decode(),
        )

    # FastAPI reads the path parameters (and OpenAPI their types) from the signature.
    parameters = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind)
        for name, kind in route.params.items()
    ]
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.body_route = route  # type: ignore[attr-defined]
    return endpoint
