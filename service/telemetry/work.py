"""The hooks that measure the work: the runner's batches and ONNX Runtime runs, and the
session manager's steps (service.telemetry.hooks says where each is called)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np

from service.inference import InferenceCore, SeriesInput, SeriesOutput, work_steps
from service.repository import LoadedModel
from service.sessions.store import SessionStore
from service.telemetry.families import observe_all
from service.telemetry.hooks import StepOutcome
from service.telemetry.metrics import Metrics, ModelMetrics
from service.telemetry.store import MeasuredStore

if TYPE_CHECKING:
    from service.telemetry.tracing import Tracing

_NULL: AbstractContextManager[None] = nullcontext()


class MeasuredCore(InferenceCore):
    """The inference core, counting each batch it runs and each ONNX Runtime run."""

    def __init__(
        self,
        model: LoadedModel,
        chunk_steps: int,
        counted: ModelMetrics | None,
        tracing: Tracing | None,
    ) -> None:
        super().__init__(model, chunk_steps)
        self._counted = counted
        self._tracing = tracing

    def predict(self, inputs: Sequence[SeriesInput]) -> list[SeriesOutput]:
        counted = self._counted
        if counted is None:
            return super().predict(inputs)
        start = perf_counter()
        outputs = super().predict(inputs)
        counted.compute.observe(perf_counter() - start)
        counted.executions.inc()
        counted.series.inc(len(inputs))
        counted.steps.inc(work_steps(inputs))
        return outputs

    def _run(
        self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self._counted is not None:
            self._counted.run_batch.observe(x.shape[0])  # x: (B, T, F)
        if self._tracing is None:
            return super()._run(x, h0, c0)
        with self._tracing.ort_run(x.shape[0], x.shape[1]):
            return super()._run(x, h0, c0)


class RunTelemetry:
    """service.telemetry.hooks.RunHooks that count (metrics) and trace (tracing)."""

    def __init__(self, metrics: Metrics | None, tracing: Tracing | None) -> None:
        self._metrics = metrics
        self._tracing = tracing

    def core(self, model: LoadedModel, chunk_steps: int) -> InferenceCore:
        counted = self._metrics.model(model) if self._metrics is not None else None
        return MeasuredCore(model, chunk_steps, counted, self._tracing)

    def queued(self, model: LoadedModel) -> object:
        if self._tracing is None:
            return perf_counter()
        return perf_counter(), self._tracing.current()

    def batch(self, model: LoadedModel, tickets: Sequence[Any]) -> AbstractContextManager[Any]:
        tracing = self._tracing
        if self._metrics is not None:
            counted = self._metrics.model(model)
            now = perf_counter()
            queued = tickets if tracing is None else [ticket[0] for ticket in tickets]
            observe_all(counted.queue, [now - t for t in queued])
            counted.batch_calls.observe(len(tickets))
        if tracing is None:
            return _NULL
        return tracing.batch(model, [ticket[1] for ticket in tickets])


class SessionTelemetry:
    """service.telemetry.hooks.SessionHooks that count sessions and measure the store."""

    def __init__(self, metrics: Metrics | None, tracing: Tracing | None) -> None:
        self._metrics = metrics
        self._tracing = tracing

    def wrap_store(self, store: SessionStore) -> SessionStore:
        return MeasuredStore(store, self._metrics, self._tracing)

    def created(self, model: LoadedModel) -> None:
        if self._metrics is not None:
            self._metrics.model(model).created.inc()

    def step(self, model: LoadedModel, outcome: StepOutcome) -> None:
        if self._metrics is not None:
            self._metrics.model(model).steps_by_outcome[outcome].inc()
