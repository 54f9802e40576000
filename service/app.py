"""The application factory: settings in, the service's ASGI app out; models load in the lifespan."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import onnxruntime as ort
from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from service import __version__
from service.api.auth import load_keys
from service.api.body_routes import add_body_routes
from service.api.errors import install_error_handlers
from service.api.front_door import FrontDoor
from service.api.openapi import OpenApiDocument
from service.api.paths import STATIC_PREFIX
from service.api.routes import BODY_ROUTES, api_router
from service.api.routes.admin import admin_router
from service.api.routes.docs import openapi_router
from service.api.routes.v2_repository import repository_router
from service.api.state import AppState, lifespan_state
from service.malloc import fix_malloc_thresholds
from service.providers import resolve_providers
from service.redaction import install_log_context
from service.reload import Reloader, reloading
from service.runner import ModelRunner
from service.sessions.factory import limits_of, make_session_manager
from service.settings import Settings
from service.telemetry.setup import Telemetry

log = logging.getLogger(__name__)


def session_options(settings: Settings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Measured in docs/operations.md: with chunked runs the arena keeps one chunk's
    # buffers (tens of MiB) and saves page faults on every run.
    options.enable_cpu_mem_arena = settings.ort_cpu_arena
    return options


def pool_runs(settings: Settings) -> int:
    """Thread-pool runs at once: the setting, or one fewer than the usable CPUs."""
    return settings.pool_runs or max(1, len(os.sched_getaffinity(0)) - 1)


def _lifespan(settings: Settings, telemetry: Telemetry) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        if settings.fixed_malloc_thresholds:
            fix_malloc_thresholds()  # memory freed after large requests goes back
        # A provider that cannot be used stops start-up here, before anything is served.
        providers = resolve_providers(settings.providers)
        log.info("loading models from %s with providers %s", settings.model_dir, providers)
        reloader = Reloader(settings.model_dir, providers, session_options(settings))
        runner = ModelRunner(
            settings.inline_max_steps,
            chunk_steps=settings.chunk_steps,
            pool_runs=pool_runs(settings),
            pool_queue_steps=settings.pool_queue_steps,
            hooks=telemetry.run_hooks,
            log_far_out=settings.log_far_out,
        )
        # SIGHUP and polling re-scan from here on (service.reload).
        async with reloading(reloader, runner, settings.reload_poll_s):
            loaded = reloader.rescan(at_start=True)
            if loaded.failures:
                log.warning(
                    "%d model version(s) failed to load; /readyz answers 503",
                    len(loaded.failures),
                )
            sessions = make_session_manager(settings, reloader, runner, telemetry.session_hooks)
            state = AppState(settings, reloader, runner, sessions, limits_of(settings))
            # Everything built so far lives as long as the app: move it out of the garbage
            # collector's generations, so collections under load walk only request objects.
            gc.collect()
            gc.freeze()
            try:
                yield lifespan_state(state)
            finally:
                await sessions.store.aclose()
                telemetry.close()

    return lifespan


def create_app(settings: Settings | None = None) -> FrontDoor:
    """A new service app; with no settings they are read from SEQCAST_ environment variables."""
    settings = settings or Settings()
    install_log_context()
    # Bad key settings stop start-up here, with the entry at fault named.
    keys = load_keys(settings.api_keys.get_secret_value(), settings.api_keys_file)
    admin = admin_router(settings, keys)  # None unless SEQCAST_ADMIN_KEYS names keys
    telemetry = Telemetry(settings)
    app = FastAPI(
        title="seqcast",
        version=__version__,
        summary="Recurrent time-series forecasts with the state to continue them.",
        description=(
            "Each served model (and version) has its own paths here, with a request body "
            "exact for it: feature count, state shape, horizon, value range. Any other name "
            "is answered 404. Every error has the ErrorResponse shape."
        ),
        lifespan=_lifespan(settings, telemetry),
        docs_url=None,  # served from local assets by service.api.routes.docs
        redoc_url=None,
        openapi_url=None,  # built per app for its models by service.api.openapi
    )
    install_error_handlers(app)
    app.include_router(api_router)
    if admin is not None:
        app.include_router(admin)
    oip_repository = repository_router(settings)  # /v2/repository: with the admin keys too
    if oip_repository is not None:
        app.include_router(oip_repository)
    add_body_routes(app.router, BODY_ROUTES)
    app.include_router(openapi_router(OpenApiDocument(app, settings, keys=keys.enabled)))
    app.mount(STATIC_PREFIX, StaticFiles(directory=swagger_ui_path), name="swagger-ui")
    observers = telemetry.install(app)  # /metrics, and the observers of metrics and tracing
    door = FrontDoor(app, settings, keys, observers)
    telemetry.bind(door)
    return door
