"""The application factory: settings in, FastAPI app out; models load in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import onnxruntime as ort
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from service import __version__
from service.api.body_limit import BodyLimitMiddleware
from service.api.errors import install_error_handlers
from service.api.fast_path import match_fast_path, serve_fast_path
from service.api.routes import api_router
from service.api.routes.docs import STATIC_PREFIX
from service.api.schemas import PredictRequest
from service.api.session_schemas import CreateSessionRequest, ObserveRequest
from service.providers import resolve_providers
from service.repository import load_repository
from service.runner import ModelRunner
from service.sessions.factory import make_session_manager
from service.settings import Settings

log = logging.getLogger(__name__)


def session_options(settings: Settings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _lifespan(settings: Settings) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # A provider that cannot be used stops start-up here, before anything is served.
        providers = resolve_providers(settings.providers)
        log.info("loading models from %s with providers %s", settings.model_dir, providers)
        repository = load_repository(settings.model_dir, providers, session_options(settings))
        if repository.failures:
            log.warning(
                "%d model version(s) failed to load; /readyz answers 503",
                len(repository.failures),
            )
        runner = ModelRunner(settings.inline_max_steps)
        sessions = make_session_manager(settings, repository, runner)
        try:
            yield {
                "repository": repository,
                "settings": settings,
                "runner": runner,
                "sessions": sessions,
            }
        finally:
            await sessions.store.aclose()

    return lifespan


class SeqcastApp(FastAPI):
    """FastAPI, with predict and observe answered before its middleware (api/fast_path.py)."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fast_path = settings.fast_path
        self._max_body_bytes = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._fast_path:
            found = match_fast_path(scope)
            if found is not None:
                await serve_fast_path(scope, receive, send, found, self._max_body_bytes)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new service app; with no settings they are read from SEQCAST_ environment variables."""
    settings = settings or Settings()
    app = SeqcastApp(
        settings,
        title="seqcast",
        version=__version__,
        summary="Recurrent time-series forecasts with the state to continue them.",
        lifespan=_lifespan(settings),
        docs_url=None,  # served from local assets by service.api.routes.docs
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.include_router(api_router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=swagger_ui_path), name="swagger-ui")
    _describe_manual_bodies(app)
    return app


def _describe_manual_bodies(app: FastAPI) -> None:
    """Put the hand-validated request bodies into the OpenAPI components routes refer to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for body in (PredictRequest, CreateSessionRequest, ObserveRequest):
                request_schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(request_schema.pop("$defs", {}))
                components[body.__name__] = request_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
