"""The hooks that measure the work: the runner's batches and ONNX Runtime runs, and the
session manager's steps (service.telemetry.hooks says where each is called).

The runner's metrics cost one record per batch: when it starts, the calls' queue waits
and the batch's size; when the inference core returns, its duration, series, steps and
ONNX Runtime runs, all under one lock. The runs are those the inference core reports
making (InferenceCore.predict's `runs`), not counted by a layer around each `session.run`.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from service.inference import InferenceCore, SeriesInput, SeriesOutput, work_steps
from service.repository import LoadedModel
from service.sessions.store import SessionStore
from service.telemetry.families import LOCK, _LocalHistogram, _LocalNumber
from service.telemetry.hooks import RunRecord, StepOutcome
from service.telemetry.metrics import Metrics, ModelMetrics
from service.telemetry.store import MeasuredStore

if TYPE_CHECKING:
    from service.telemetry.tracing import Tracing

_NULL: AbstractContextManager[None] = nullcontext()


class _RunCounts:
    """The runner's metrics of one model version, recorded once per batch and once per
    inference-core call: in one process straight into the local values under their one
    lock, with several workers through prometheus_client's children."""

    def __init__(self, counted: ModelMetrics, chunk_steps: int) -> None:
        self.chunk_steps = max(1, chunk_steps)
        self.queue = counted.queue
        self.compute = counted.compute
        self.batch_calls = counted.batch_calls
        self.run_batch = counted.run_batch
        self.executions = counted.executions
        self.series = counted.series
        self.steps = counted.steps
        values = (self.queue, self.compute, self.batch_calls, self.run_batch)
        numbers = (self.executions, self.series, self.steps)
        self.local = all(isinstance(v, _LocalHistogram) for v in values) and all(
            isinstance(v, _LocalNumber) for v in numbers
        )
        # The same children, as the local values they are when `local`.
        self.queue_h, self.compute_h, self.batch_calls_h, self.run_batch_h = cast(
            tuple[_LocalHistogram, ...], values
        )
        self.executions_n, self.series_n, self.steps_n = cast(tuple[_LocalNumber, ...], numbers)

    def waited(self, queued: Sequence[float]) -> None:
        """A batch of these calls (queued at these perf_counter times) starts."""
        now = perf_counter()
        calls = len(queued)
        if not self.local:
            for t in queued:
                self.queue.observe(now - t)
            self.batch_calls.observe(calls)
            return
        queue, batch_calls = self.queue_h, self.batch_calls_h
        bounds = queue.bounds
        if calls == 1:
            wait = now - queued[0]
            i = bisect_left(bounds, wait)
            with LOCK:
                queue.counts[i] += 1
                queue.sum += wait
                batch_calls.counts[0] += 1  # the first bound is 1
                batch_calls.sum += 1
            return
        b = bisect_left(batch_calls.bounds, calls)
        counts = queue.counts
        total = 0.0
        with LOCK:
            for t in queued:
                wait = now - t
                counts[bisect_left(bounds, wait)] += 1
                total += wait
            queue.sum += total
            batch_calls.counts[b] += 1
            batch_calls.sum += calls

    def ran(
        self, seconds: float, inputs: Sequence[SeriesInput], runs: list[tuple[int, int]]
    ) -> None:
        """The inference core answered `inputs` in `seconds`, with these ONNX Runtime runs
        (series per run, number of such runs)."""
        steps = work_steps(inputs)
        if not self.local:
            self.compute.observe(seconds)
            self.executions.inc()
            self.series.inc(len(inputs))
            self.steps.inc(steps)
            for batch, count in runs:
                for _ in range(count):
                    self.run_batch.observe(batch)
            return
        compute, run_batch = self.compute_h, self.run_batch_h
        i = bisect_left(compute.bounds, seconds)
        found = [(bisect_left(run_batch.bounds, batch), batch, count) for batch, count in runs]
        with LOCK:
            compute.counts[i] += 1
            compute.sum += seconds
            self.executions_n.value += 1
            self.series_n.value += len(inputs)
            self.steps_n.value += steps
            for j, batch, count in found:
                run_batch.counts[j] += count
                run_batch.sum += batch * count

    def record_all(self, records: Sequence[RunRecord]) -> None:
        """Count these inference-core calls of the runner (local values only)."""
        waits = array("d")
        durations: list[float] = []
        sizes: list[int] = []
        series = steps = 0
        runs_1 = 0  # ONNX Runtime runs of one series
        runs: list[tuple[int, int]] = []  # (series, number of such runs) of the others
        for _, start, end, waited, ran, stepped, made in records:
            durations.append(end - start)
            sizes.append(len(waited))
            waits.extend(waited)
            series += ran
            steps += stepped
            for batch, count in made:
                if batch == 1:
                    runs_1 += count
                else:
                    runs.append((batch, count))
        run_batch = self.run_batch_h
        found = [(bisect_left(run_batch.bounds, batch), batch, count) for batch, count in runs]
        self.queue_h.observe_all(waits)
        self.compute_h.observe_all(durations)
        self.batch_calls_h.observe_all(sizes)
        with LOCK:
            self.executions_n.value += len(records)
            self.series_n.value += series
            self.steps_n.value += steps
            run_batch.counts[0] += runs_1  # the first bound is 1
            run_batch.sum += runs_1
            for j, batch, count in found:
                run_batch.counts[j] += count
                run_batch.sum += batch * count


class MeasuredCore(InferenceCore):
    """The inference core, counting each call (metrics) and tracing each ONNX Runtime
    run (tracing)."""

    def __init__(
        self,
        model: LoadedModel,
        chunk_steps: int,
        counts: _RunCounts | None,
        tracing: Tracing | None,
    ) -> None:
        super().__init__(model, chunk_steps)
        self.counts = counts
        self._tracing = tracing

    def predict(
        self, inputs: Sequence[SeriesInput], runs: list[tuple[int, int]] | None = None
    ) -> list[SeriesOutput]:
        counts = self.counts
        if counts is None:
            return super().predict(inputs, runs)
        made: list[tuple[int, int]] = [] if runs is None else runs
        start = perf_counter()
        outputs = super().predict(inputs, made)
        counts.ran(perf_counter() - start, inputs, made)
        return outputs


class TracedCore(MeasuredCore):
    """A measured core with a span around each ONNX Runtime run (tracing on)."""

    def _run(
        self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        assert self._tracing is not None
        with self._tracing.ort_run(x.shape[0], x.shape[1]):
            return super()._run(x, h0, c0)


class RunTelemetry:
    """service.telemetry.hooks.RunHooks that count (metrics) and trace (tracing).

    Metrics in one process without tracing take the runner's records, counted when
    drained (before each scrape, or once the runner holds DRAIN_AT of them); otherwise
    the cores it makes count each call, and `batch` each batch's waits.
    """

    def __init__(self, metrics: Metrics | None, tracing: Tracing | None) -> None:
        self._metrics = metrics
        self._tracing = tracing
        self._counts: dict[tuple[str, int], _RunCounts] = {}
        local = metrics is not None and not metrics.shared
        self.records: list[RunRecord] | None = [] if local and tracing is None else None
        self._draining = threading.Lock()
        if self.records is not None:
            assert metrics is not None
            metrics.before_scrape(self.drain)

    def _counts_of(self, model: LoadedModel, chunk_steps: int) -> _RunCounts:
        assert self._metrics is not None
        key = model.key
        counts = self._counts.get(key)
        if counts is None or counts.chunk_steps != max(1, chunk_steps):
            counts = self._counts[key] = _RunCounts(self._metrics.model(model), chunk_steps)
        return counts

    def core(self, model: LoadedModel, chunk_steps: int) -> InferenceCore:
        if self.records is not None:
            self._counts_of(model, chunk_steps)
            return InferenceCore(model, chunk_steps)  # the runner's records count it
        counts = self._counts_of(model, chunk_steps) if self._metrics is not None else None
        made = MeasuredCore if self._tracing is None else TracedCore
        return made(model, chunk_steps, counts, self._tracing)

    def queued(self, model: LoadedModel) -> object:
        if self._tracing is None:
            return perf_counter()
        return perf_counter(), self._tracing.current()

    def batch(self, core: InferenceCore, tickets: Sequence[Any]) -> AbstractContextManager[Any]:
        tracing = self._tracing
        counts = cast(MeasuredCore, core).counts  # the core is one that `core` made
        if counts is not None:
            counts.waited(tickets if tracing is None else [ticket[0] for ticket in tickets])
        if tracing is None:
            return _NULL
        return tracing.batch(core.model, [ticket[1] for ticket in tickets])

    def far_out(self, model: LoadedModel, count: int) -> None:
        if self._metrics is not None:
            self._metrics.model(model).far_out.inc(count)

    def drain(self) -> None:
        records = self.records
        if not records:
            return
        with self._draining:  # appends go on meanwhile (list.append is atomic)
            taken = records[: len(records)]
            del records[: len(taken)]
        by_model: dict[tuple[str, int], list[RunRecord]] = {}
        for record in taken:
            model = record[0].model
            by_model.setdefault(model.key, []).append(record)
        for key, found in by_model.items():
            self._counts[key].record_all(found)  # made with the core


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
