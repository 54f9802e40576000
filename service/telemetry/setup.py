"""Metrics and tracing for one app, as the settings ask: the hooks for the runner and the
session manager, the front door's observers, and the /metrics route."""

from __future__ import annotations

from typing import Any

from anyio.to_thread import run_sync
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from service.api.body_routes import declared_routes
from service.api.front_door import FrontDoor, RequestObserver
from service.api.routes import stream
from service.settings import Settings
from service.telemetry.hooks import NO_RUN_HOOKS, NO_SESSION_HOOKS, RunHooks, SessionHooks
from service.telemetry.metrics import Metrics, MetricsObserver, metrics_observer
from service.telemetry.work import RunTelemetry, SessionTelemetry


class Telemetry:
    """What one app measures; nothing at all when metrics and tracing are both off."""

    def __init__(self, settings: Settings) -> None:
        self.metrics = Metrics() if settings.metrics else None
        self.tracing: Any = None
        if settings.tracing:
            # Only here: the otel extra may not be installed when tracing is off.
            from service.telemetry.tracing import Tracing

            self.tracing = Tracing()
        on = self.metrics is not None or self.tracing is not None
        self._observer: MetricsObserver | None = None
        self.run_hooks: RunHooks = RunTelemetry(self.metrics, self.tracing) if on else NO_RUN_HOOKS
        self.session_hooks: SessionHooks = (
            SessionTelemetry(self.metrics, self.tracing) if on else NO_SESSION_HOOKS
        )

    def install(self, app: FastAPI) -> list[RequestObserver]:
        """Add /metrics to the app (metrics on); the observers for its front door."""
        observers: list[RequestObserver] = []
        if self.tracing is not None:
            observers.append(self.tracing)
        if self.metrics is not None:
            app.include_router(_metrics_router(self.metrics))
            # Requests on these routes are model requests even when they fail before
            # a model version is known: the routes with a JSON body, and the stream.
            model_routes = [route.path for route, _ in declared_routes(app)]
            model_routes += [getattr(route, "path", "") for route in stream.router.routes]
            self._observer = metrics_observer(self.metrics, model_routes)
            observers.append(self._observer)
        return observers

    def bind(self, front_door: FrontDoor) -> None:
        """The metrics read the requests in flight from the front door's count."""
        if self._observer is not None:
            self._observer.bind(lambda: front_door.in_flight)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()


def _metrics_router(metrics: Metrics) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        """Prometheus metrics (text format, or OpenMetrics when the Accept header asks)."""
        accept = request.headers.get("accept")
        if metrics.multiprocess_dir is not None:
            # Reads every worker's files: off the event loop.
            body, content_type = await run_sync(metrics.render, accept)
        else:
            body, content_type = metrics.render(accept)
        return Response(body, headers={"content-type": content_type})

    return router
