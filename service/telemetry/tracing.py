"""OpenTelemetry spans (the optional `otel` extra): request -> batch -> ONNX Runtime run,
and session store calls.

- Request: one SERVER span per HTTP request or WebSocket connection, opened by the front
  door, continuing the trace of a W3C `traceparent` header when the client sends one.
- Batch: one span per inference-core call. A batch that coalesces several requests is a
  child of the span of its first call's request and links to the spans of the others,
  so each request's trace reaches the batch that answered it.
- ONNX Runtime run: one span per `session.run`, a child of its batch (a forecast rolled
  out over h steps runs h - 1 more).
- Store: one span per session store call, a child of the request that made it.

Spans go to the tracer provider already installed in the process (by
`opentelemetry-instrument`, or a test) or, when there is none, to one made here that
exports over OTLP when opentelemetry-exporter-otlp is installed (configured by the
standard OTEL_EXPORTER_OTLP_* variables) and to the console otherwise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Scope

from service.redaction import redacted_path, request_id_var
from service.repository import LoadedModel
from service.telemetry.context import request_model

log = logging.getLogger(__name__)

_SPAN = "seqcast.span"  # where the request's span and context token wait in the scope
_TRACE_HEADERS = {b"traceparent": "traceparent", b"tracestate": "tracestate"}


class Tracing:
    """The spans of one app."""

    def __init__(self) -> None:
        self._tracer = trace.get_tracer("seqcast", tracer_provider=_provider())
        self._propagator = TraceContextTextMapPropagator()

    # The front door's observer: one span per request.

    needs_start = True

    def request_started(self, scope: Scope) -> None:
        carrier = {
            _TRACE_HEADERS[name]: value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _TRACE_HEADERS
        }
        parent = self._propagator.extract(carrier) if carrier else None
        method = scope.get("method", "WEBSOCKET")
        span = self._tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": redacted_path(scope["path"]),
                "seqcast.request_id": request_id_var.get(),
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        scope[_SPAN] = (span, token)

    def request_ended(self, scope: Scope, status: int, seconds: float) -> None:
        span, token = scope.pop(_SPAN)
        route = getattr(scope.get("route"), "path", None)
        if route:
            span.update_name(f"{scope.get('method', 'WEBSOCKET')} {route}")
            span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", status)
        model = request_model(scope, False)
        if model is not None:
            span.set_attribute("seqcast.model", model.name)
            span.set_attribute("seqcast.model_version", model.version)
        if status >= 500 or status == 0:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        otel_context.detach(token)

    # Inside: batches, ONNX Runtime runs, store calls.

    def current(self) -> SpanContext:
        """The span context of the request being handled (for the batch's links)."""
        return trace.get_current_span().get_span_context()

    def batch(
        self, model: LoadedModel, calls: Sequence[SpanContext]
    ) -> AbstractContextManager[Any]:
        """A span for one batch: a child of its first call's span, linked to the rest."""
        first = calls[0] if calls else None
        parent = (
            trace.set_span_in_context(NonRecordingSpan(first))
            if first is not None and first.is_valid
            else None
        )
        return self._tracer.start_as_current_span(
            "seqcast.batch",
            context=parent,
            links=[Link(c) for c in calls[1:] if c.is_valid],
            attributes={
                "seqcast.model": model.name,
                "seqcast.model_version": model.version,
                "seqcast.batch.calls": len(calls),
            },
        )

    def ort_run(self, batch_size: int, time_steps: int) -> AbstractContextManager[Any]:
        return self._tracer.start_as_current_span(
            "onnxruntime.run",
            attributes={"seqcast.batch.size": batch_size, "seqcast.time_steps": time_steps},
        )

    def store_span(self, kind: str, operation: str) -> AbstractContextManager[Any]:
        return self._tracer.start_as_current_span(
            f"session_store.{operation}",
            kind=SpanKind.CLIENT if kind == "redis" else SpanKind.INTERNAL,
            attributes={"db.system": kind, "db.operation": operation},
        )


def _provider() -> trace.TracerProvider:
    """The process's SDK tracer provider; one exporting to OTLP or the console if none."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "seqcast"}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    trace.set_tracer_provider(provider)
    return provider


def _exporter() -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
    except ImportError:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError:
            log.info("tracing: spans go to the console (install opentelemetry-exporter-otlp)")
            return ConsoleSpanExporter()
    log.info("tracing: spans go to OTLP (OTEL_EXPORTER_OTLP_* settings)")
    exporter: SpanExporter = OTLPSpanExporter()
    return exporter
