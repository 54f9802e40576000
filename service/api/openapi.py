"""The OpenAPI document: exactly as strict as the server, for one app's models and settings.

What `POST /v1/models/{name}/predict` accepts depends on the model: its feature count
fixes the shape of `values`, its state shape that of `h` and `c` (and whether `c` may be
there), its targets whether `horizon` may exceed 1, and a narrow input scaler how large a
value may be. One schema cannot say that for every name, so the document lists each
served model's own paths (`/v1/models/tiny-lstm/predict`,
`/v1/models/tiny-lstm/versions/1/predict`, and the same for sessions), each with a body
schema exact for that model version, and leaves the templated forms out: the server still
answers any name, with a 404 for one it does not serve. A declared route without `{name}`
(observe) keeps the generic body with the settings' limits filled in: the session its
path names decides the rest. Every operation also lists the answers the front door gives
before any route: 403 for a foreign origin, 401 when keys are on, and for a POST 400, 413
and 415.

GET and DELETE operations come from FastAPI's own generation; errors in every operation
are the one ErrorResponse shape.
"""

from __future__ import annotations

import copy
import functools
import math
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from service.api.body_routes import BodyRoute, declared_routes
from service.api.paths import exempt_paths
from service.api.schemas import F32_LIMIT, H_LIMIT
from service.repository import F32_MAX, LoadedModel, ModelRepository
from service.settings import Settings

_ERROR = {"$ref": "#/components/schemas/ErrorResponse"}
_JSON = "application/json"
# Answers the front door gives before any route (service.api.front_door).
_FRONT_DOOR_ANSWERS = {
    400: "an invalid Content-Length, or a body cut short",
    401: "no valid API key: send Authorization: Bearer <key> or X-API-Key: <key>",
    403: "a browser Origin this service does not allow (SEQCAST_ALLOWED_ORIGINS)",
    413: "the body is larger than max_body_bytes",
    415: "the body is not JSON: send Content-Type: application/json",
}
_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "an API key as a bearer token"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]  # either one


class OpenApiDocument:
    """One app's document, built on first use and kept while the same repository serves.

    A reload that swaps the repository snapshot gets a new document on the next request;
    the snapshot is held weakly, so a replaced one (and its models) is not kept alive here.
    `drop` forgets the document kept.
    """

    def __init__(self, app: FastAPI, settings: Settings, *, keys: bool) -> None:
        self._app = app
        self._settings = settings
        self._keys = keys  # API keys are on
        self._repository: weakref.ref[ModelRepository] | None = None
        self._encoded: dict[str, bytes] = {}  # root path -> the document as JSON
        self._lock = threading.Lock()

    def json(self, repository: ModelRepository, root_path: str = "") -> bytes:
        # Built on worker threads: one at a time, so that a document built for a snapshot
        # a reload has since replaced is never kept as the new snapshot's.
        with self._lock:
            if self._repository is None or self._repository() is not repository:
                self.drop()
                self._repository = weakref.ref(repository)
            encoded = self._encoded.get(root_path)
            if encoded is None:
                document = build_document(self._app, self._settings, repository, keys=self._keys)
                if root_path:
                    document["servers"] = [{"url": root_path}]
                encoded = self._encoded[root_path] = orjson.dumps(document)
            return encoded

    def drop(self) -> None:
        self._repository = None
        self._encoded.clear()


def build_document(
    app: FastAPI, settings: Settings, repository: ModelRepository, *, keys: bool
) -> dict[str, Any]:
    """The whole document for these routes, settings and loaded models."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    declared = {route.path: body for route, body in declared_routes(app)}
    open_paths, _ = exempt_paths(settings.exempt_groups)
    paths: dict[str, dict[str, Any]] = {}
    for path, item in document["paths"].items():
        body_route = declared.get(path)
        if body_route is None:
            paths[path] = item
            continue
        operation = item.pop("post")
        if item:
            paths[path] = item
        for concrete, post in _declared_operations(body_route, operation, repository, settings):
            paths.setdefault(concrete, {})["post"] = post
    for path, item in paths.items():
        for method, operation in item.items():
            _front_door_answers(operation, method, needs_key=keys and path not in open_paths)
    document["paths"] = paths
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    # Validation errors are answered in the ErrorResponse shape (service.api.errors).
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    if keys:
        document["components"]["securitySchemes"] = copy.deepcopy(_SECURITY_SCHEMES)
    return document


def _declared_operations(
    route: BodyRoute, operation: dict[str, Any], repository: ModelRepository, settings: Settings
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, operation) of a declared route: one per served model (and version) when its
    path names them, else the route itself with the generic body."""
    if "name" not in route.params:
        generic = copy.deepcopy(operation)
        generic["requestBody"] = _request_body(route, None, settings)
        yield route.path, generic
        return
    versioned = "version" in route.params
    for name in sorted(repository.models):
        versions = repository.models[name]
        for version in sorted(versions) if versioned else [max(versions)]:
            model = versions[version]
            post = copy.deepcopy(operation)
            post["operationId"] = f"{route.name or operation['operationId']}_{name}" + (
                f"_v{version}" if versioned else ""
            )
            parameters = [
                p
                for p in post.pop("parameters", [])
                if p["in"] != "path" or p["name"] not in ("name", "version")
            ]
            if parameters:
                post["parameters"] = parameters
            post["requestBody"] = _request_body(route, model, settings)
            post["description"] = f"{route.summary} Here: {_about(model)}."
            path = route.path.replace("{name}", name).replace("{version}", str(version))
            yield path, post


def _about(model: LoadedModel) -> str:
    m = model.manifest
    return (
        f"{m.name} version {m.version}, {m.architecture.cell.upper()}, "
        f"features {', '.join(m.features)}; targets {', '.join(m.targets)}"
    )


def _request_body(
    route: BodyRoute, model: LoadedModel | None, settings: Settings
) -> dict[str, Any]:
    schema = request_schema(route.request, model, settings)
    return {"required": route.body_required, "content": {_JSON: {"schema": schema}}}


def _front_door_answers(operation: dict[str, Any], method: str, *, needs_key: bool) -> None:
    responses: dict[str, Any] = operation["responses"]
    codes = [403] + ([401] if needs_key else []) + ([400, 413, 415] if method == "post" else [])
    for code in codes:
        responses.setdefault(str(code), _error_answer(_FRONT_DOOR_ANSWERS[code]))
    if needs_key:
        operation["security"] = copy.deepcopy(_SECURITY)
        responses["401"]["headers"] = {
            "WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}
        }
    validation = responses.get("422", {}).get("content", {}).get(_JSON, {}).get("schema")
    if validation == {"$ref": "#/components/schemas/HTTPValidationError"}:
        responses["422"] = _error_answer("a path or query parameter the server refuses")
    created = responses.get("201")  # every 201 here is a new session
    if created is not None:
        created["headers"] = {
            "Location": {
                "required": True,
                "description": "the session's path",
                "schema": {"type": "string"},
            }
        }
    limited = responses.get("429")
    if limited is not None:
        limited["headers"] = {
            "Retry-After": {
                "required": True,
                "description": "seconds to wait before trying again",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        }
    operation["responses"] = dict(sorted(responses.items()))


def _error_answer(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ERROR}}}


# Request bodies


def request_schema(
    kind: type[BaseModel], model: LoadedModel | None, settings: Settings
) -> dict[str, Any]:
    """The JSON schema of a request body: pydantic's, with what the server also enforces
    filled in (limits; and with a model, everything that model version requires)."""
    schema = copy.deepcopy(_pydantic_schema(kind))
    properties = schema["properties"]
    series = properties.get("series")
    if series is not None:
        series["maxItems"] = settings.max_series_per_request
        _fit(series["items"], model, settings)
    _fit(schema, model, settings)
    return schema


@functools.cache
def _pydantic_schema(kind: type[BaseModel]) -> dict[str, Any]:
    return inline_schema(kind.model_json_schema())


def _fit(schema: dict[str, Any], model: LoadedModel | None, settings: Settings) -> None:
    """`values`, `state` and `horizon` of one request object, exact for `model`."""
    properties = schema["properties"]
    if "values" in properties:
        properties["values"] = _like(properties["values"], values_schema(model, settings))
    if "state" in properties and model is not None:
        properties["state"] = _like(properties["state"], state_schema(model))
    if "horizon" in properties:
        most = settings.max_horizon if model is None or model.manifest.can_roll_out else 1
        properties["horizon"]["maximum"] = most
    if "intervals" in properties and model is not None and model.manifest.intervals is None:
        del properties["intervals"]  # no calibration: any level would be refused
    if "timestamp" in properties and model is not None and model.manifest.time is None:
        del properties["timestamp"]  # no time column: a stamp would be refused


def _like(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`new` in place of `old`: null still allowed where it was, and old's description
    and default unless new has its own."""
    kept: dict[str, Any] = {
        k: old[k] for k in ("description", "default") if k in old and k not in new
    }
    if {"type": "null"} in old.get("anyOf", []):
        return {"anyOf": [new, {"type": "null"}], **kept}
    return {**new, **kept}


def values_schema(model: LoadedModel | None, settings: Settings) -> dict[str, Any]:
    """Observations: numbers (one feature) or rows of one number per feature."""
    count = {"minItems": 1, "maxItems": settings.max_values_per_series}
    if model is None:
        row: dict[str, Any] = {"type": "array", "items": _number(), "minItems": 1}
        numbers = {"type": "array", "items": _number(), **count}
        return {"anyOf": [numbers, {"type": "array", "items": row, **count}]}
    features = model.manifest.client_features
    bounds = value_bounds(model)
    n = len(features)
    if len(set(bounds)) == 1:
        row = {"type": "array", "items": _number(*bounds[0])}
    else:
        row = {"type": "array", "prefixItems": [_number(*b) for b in bounds], "items": False}
    named = ", ".join(features)
    row.update(minItems=n, maxItems=n, description=f"one number for each of: {named}")
    example_row = [min(max(0.1 * (i + 1), lo), hi) for i, (lo, hi) in enumerate(bounds)]
    rows = {"type": "array", "items": row, **count, "examples": [[example_row] * 3]}
    about = f"Observations in original units, oldest first: rows of {n} numbers ({named})"
    if n > 1:
        return {**rows, "description": about}
    numbers = {"type": "array", "items": _number(*bounds[0]), **count}
    numbers["examples"] = [[example_row[0]] * 3]
    about = f"Observations in original units, oldest first: numbers ({named}), or rows of one"
    return {"anyOf": [numbers, rows], "description": about}


def state_schema(model: LoadedModel) -> dict[str, Any]:
    """A state this model version gave: its name, version and [num_layers][hidden] shape."""
    layers, hidden = model.state_shape
    shape = f"[num_layers][hidden] = [{layers}][{hidden}]"

    def matrix(number: dict[str, Any], description: str) -> dict[str, Any]:
        row = {"type": "array", "minItems": hidden, "maxItems": hidden, "items": number}
        return {
            "type": "array",
            "minItems": layers,
            "maxItems": layers,
            "items": row,
            "description": description,
        }

    properties: dict[str, Any] = {
        "model": {"type": "string", "const": model.name},
        "version": {"type": "integer", "const": model.version},
        "h": matrix(_number(-H_LIMIT, H_LIMIT), f"{shape}, each within ±{H_LIMIT}"),
    }
    required = ["model", "version", "h"]
    if model.manifest.is_lstm:
        properties["c"] = matrix(_number(), f"LSTM cell state, {shape}")
        required.append("c")
    else:
        cell = model.manifest.architecture.cell
        properties["c"] = {"type": "null", "description": f"absent or null: a {cell} has no c"}
    if model.lag:
        row = {"type": "array", "items": _number(), "minItems": 1, "maxItems": model.lag}
        properties["levels"] = {
            "anyOf": [row, {"type": "array", "items": row, "minItems": 1, "maxItems": model.lag}],
            "description": f"the last (up to {model.lag}) observed target values",
        }
        required.append("levels")
    else:
        properties["levels"] = {"type": "null", "description": "absent: no differences"}
    if model.manifest.time is not None:
        properties["time"] = {
            "anyOf": [{"type": "string", "minLength": 4, "maxLength": 64}, {"type": "null"}],
            "description": "the stamp of the last observed value (as an answer gave it)",
        }
    else:
        properties["time"] = {"type": "null", "description": "absent: no time column"}
    if model.error_scale is not None:
        targets = len(model.manifest.targets)
        numbers = {"type": "array", "items": _number(), "minItems": targets, "maxItems": targets}
        properties["scale"] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mean_square": numbers,
                "last": {"anyOf": [numbers, {"type": "null"}]},
            },
            "required": ["mean_square"],
            "description": "the running scale of the adaptive intervals (absent: afresh)",
        }
    else:
        properties["scale"] = {"type": "null", "description": "absent: no adaptive intervals"}
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": required,
        "description": f"a state that {model.name} version {model.version} answered with",
    }


def _number(low: float = -F32_LIMIT, high: float = F32_LIMIT) -> dict[str, Any]:
    return {"type": "number", "minimum": low, "maximum": high}


def value_bounds(model: LoadedModel) -> list[tuple[float, float]]:
    """Per feature, the least and the greatest JSON number the model takes as a value."""
    if model.scale_is_safe:
        return [(-F32_LIMIT, F32_LIMIT)] * model.client_inputs
    n = model.client_inputs  # calendar inputs are the service's to compute
    return scaled_bounds(model.x_mul64[:n], model.x_add64[:n])


def scaled_bounds(mul: np.ndarray, add: np.ndarray) -> list[tuple[float, float]]:
    """For a narrow input scaler (value * mul + add, in float64 after the value is rounded
    to float32): per feature, the outermost JSON numbers whose float32 scales to within
    float32, as service.inputs checks it. Exact to the last float64 either side."""
    return [
        (_edge(m, a, -1), _edge(m, a, 1)) for m, a in zip(mul.tolist(), add.tolist(), strict=True)
    ]


def _edge(mul: float, add: float, side: int) -> float:
    """The outermost double on `side` (-1 low, 1 high) the server takes for a feature."""
    if mul == 0:
        return side * F32_LIMIT

    def fits(x: np.float32) -> bool:  # service.inputs' check, on the value as float32
        return abs(float(x) * mul + add) <= F32_MAX

    outward, inward = np.float32(side * np.inf), np.float32(-side * np.inf)
    ideal = (side * F32_MAX * (1 if mul > 0 else -1) - add) / mul
    edge = np.float32(min(max(ideal, -F32_MAX), F32_MAX))
    while not fits(edge):
        edge = np.nextafter(edge, inward)
    while abs(float(edge)) < F32_MAX and fits(np.nextafter(edge, outward)):
        edge = np.nextafter(edge, outward)
    # Doubles between edge and the next float32 out round to the nearer one, a tie to the
    # even one; past float32's max the next step is 2**128, and what rounds there is inf.
    if abs(float(edge)) == F32_MAX:
        beyond = side * 2.0**128
    else:
        beyond = float(np.nextafter(edge, outward))
    half = (float(edge) + beyond) / 2
    even = int(edge.view(np.uint32)) % 2 == 0
    return half if even else math.nextafter(half, float(edge))


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with its local $defs substituted in place (no $refs left)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**resolve(defs[ref.removeprefix("#/$defs/")]), **resolve(rest)}
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
