"""OpenTelemetry spans (SEQCAST_TRACING=true), caught by the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.inference import SeriesInput
from service.repository import load_version
from service.runner import ModelRunner
from service.telemetry.tracing import Tracing
from service.telemetry.work import RunTelemetry
from tests.service.sessions_support import MakeClient

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """The process's tracer provider (set once), with an in-memory exporter on it."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter.clear()
    yield exporter
    exporter.clear()


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def test_predict_continues_the_callers_trace_down_to_the_onnx_run(
    make_client: MakeClient, spans: InMemorySpanExporter
) -> None:
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    body = {"series": [{"values": [1, 2, 3], "horizon": 3}]}
    with make_client(tracing=True) as c:
        response = c.post(
            "/v1/models/tiny-lstm/predict", json=body, headers={"traceparent": traceparent}
        )
        assert response.status_code == 200
    (request,) = named(spans, "POST /v1/models/{name}/predict")
    assert request.context is not None
    assert request.parent is not None
    assert format(request.context.trace_id, "032x") == TRACE_ID
    assert format(request.parent.span_id, "016x") == PARENT_ID
    assert request.kind is trace.SpanKind.SERVER
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/v1/models/{name}/predict"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["seqcast.model"] == "tiny-lstm"
    assert request.attributes["seqcast.model_version"] == 2
    (batch,) = named(spans, "seqcast.batch")
    assert batch.parent is not None
    assert batch.parent.span_id == request.context.span_id
    runs = named(spans, "onnxruntime.run")
    assert len(runs) == 3  # the observed values, then two rolled-out steps
    assert batch.context is not None
    assert all(r.parent is not None and r.parent.span_id == batch.context.span_id for r in runs)
    assert {r.context.trace_id for r in runs if r.context} == {int(TRACE_ID, 16)}


def test_session_store_calls_have_spans_under_their_request(
    make_client: MakeClient, spans: InMemorySpanExporter
) -> None:
    with make_client(tracing=True) as c:
        sid = c.post("/v1/models/tiny-rnn/sessions").json()["session"]
        step = {"values": [1, 2], "offset": 0}
        assert c.post(f"/v1/sessions/{sid}/observe", json=step).status_code == 200
    (observe,) = named(spans, "POST /v1/sessions/{session_id}/observe")
    assert observe.context is not None
    store_calls = [s for s in spans.get_finished_spans() if s.name.startswith("session_store.")]
    under = {
        s.name for s in store_calls if s.parent and s.parent.span_id == observe.context.span_id
    }
    assert under == {"session_store.get", "session_store.compare_and_advance"}
    assert sid not in json.dumps([dict(s.attributes or {}) for s in spans.get_finished_spans()])


@pytest.mark.anyio
async def test_a_coalesced_batch_is_a_child_of_the_first_call_linked_to_the_others(
    model_dir: Path, spans: InMemorySpanExporter
) -> None:
    model = load_version(
        model_dir / "tiny-gru" / "1", ["CPUExecutionProvider"], ort.SessionOptions()
    )
    runner = ModelRunner(1024, hooks=RunTelemetry(None, Tracing()))
    tracer = trace.get_tracer("test")
    values = np.ones((3, 1), np.float32)

    async def call(i: int) -> int:
        with tracer.start_as_current_span(f"request-{i}") as span:
            await runner.run(model, [SeriesInput(values=values)])
            return span.get_span_context().span_id

    ids = await asyncio.gather(*(call(i) for i in range(3)))
    (batch,) = named(spans, "seqcast.batch")
    assert batch.parent is not None
    assert batch.parent.span_id == ids[0]
    assert [link.context.span_id for link in batch.links] == ids[1:]
    assert batch.attributes is not None
    assert batch.attributes["seqcast.batch.calls"] == 3


def test_tracing_off_makes_no_spans(make_client: MakeClient, spans: InMemorySpanExporter) -> None:
    with make_client() as c:
        assert c.post("/v1/models/tiny-rnn/predict", json={"series": [{"values": [1]}]}).is_success
    assert spans.get_finished_spans() == ()
