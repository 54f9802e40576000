"""How the service runs the inference core: inline or on a worker thread, in shared batches.

A small recurrent model costs microseconds per step, less than the hop to a worker
thread, so small calls run on the event loop (`inline_max_steps`, measured in
docs/benchmarks.md); larger ones go to the thread pool and never block the loop.

Small calls for the same model that arrive together are answered by one
`InferenceCore.predict`: the first schedules a flush for a later turn of the event
loop, and every call made before it joins. Under concurrent load this turns many
`session.run` calls of batch 1 into one of batch N. While the last batch answered
several calls (the server is under concurrent load), the batch waits a turn more for
as long as calls keep joining, up to MAX_TURNS turns: a request whose bytes arrived
while the previous batch ran is read in a later turn's I/O, and its handling starts
after the callbacks already queued, so with one turn it would run in a batch of its
own, and the requests would settle into several groups that alternate, each run
apart. Otherwise (a lone request) the flush waits one turn. Either costs microseconds
of latency. Predictions do not depend on what else is in the batch (each series is
its own row, with its own state).

The thread pool runs at most `pool_runs` calls at once, so large requests cannot take
every core from the event loop that answers the small ones; more wait their turn, up
to `pool_queue_steps` of waiting work, and past that are refused with `Overloaded`
(503 with Retry-After) instead of holding memory in a queue without end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any, cast
from weakref import WeakKeyDictionary, WeakSet

import numpy as np
from anyio.to_thread import run_sync

from service.inference import (
    DEFAULT_CHUNK_STEPS,
    InferenceCore,
    SeriesInput,
    SeriesOutput,
    work_steps,
)
from service.repository import LoadedModel
from service.telemetry.context import note_model
from service.telemetry.hooks import DRAIN_AT, NO_RUN_HOOKS, Ran, RunHooks, RunRecord, noted

log = logging.getLogger(__name__)


# Turns of the event loop a batch waits at most under load for more calls to join.
MAX_TURNS = 4


class Overloaded(Exception):
    """The thread pool's queue is full: the caller should retry after `retry_after_s`."""

    def __init__(self, queued_steps: int, limit: int) -> None:
        super().__init__(
            f"the server is busy: {queued_steps} steps of work already wait for the thread "
            f"pool, at the limit pool_queue_steps={limit}; retry later"
        )
        self.retry_after_s = 1.0


@dataclass(slots=True)
class _Call:
    inputs: Sequence[SeriesInput]
    steps: int
    future: asyncio.Future[list[SeriesOutput]]
    ticket: Any  # from RunHooks.queued, or a perf_counter time (RunHooks.records)


class ModelRunner:
    """Runs predictions for every model of one app; one instance per app (lifespan)."""

    def __init__(
        self,
        inline_max_steps: int,
        *,
        chunk_steps: int = DEFAULT_CHUNK_STEPS,
        pool_runs: int = 1,
        pool_queue_steps: int = 2**63 - 1,
        hooks: RunHooks = NO_RUN_HOOKS,
        log_far_out: bool = False,
    ) -> None:
        self._inline_max_steps = inline_max_steps
        self._log_far_out = log_far_out  # a warning per call with far-out inputs
        self._hooks = hooks  # metrics and tracing (service.telemetry)
        # Metrics without tracing: each run is noted in this list (service.telemetry.hooks).
        self._records = hooks.records
        self._chunk_steps = chunk_steps
        self._pool = asyncio.Semaphore(pool_runs)
        self._pool_queue_steps = pool_queue_steps
        self._queued_steps = 0  # work waiting for a pool slot
        # One InferenceCore per loaded model version: it precomputes the scaling vectors.
        # A core refers to its model, so an entry lives until `forget` drops it.
        self._cores: WeakKeyDictionary[LoadedModel, InferenceCore] = WeakKeyDictionary()
        self._retired: WeakSet[LoadedModel] = WeakSet()  # versions a reload removed
        self._waiting: dict[LoadedModel, list[_Call]] = {}
        self._crowded = False  # the last batch answered several calls: wait turns more

    def core(self, model: LoadedModel) -> InferenceCore:
        core = self._cores.get(model)
        if core is None:
            core = self._hooks.core(model, self._chunk_steps)
            if model not in self._retired:
                self._cores[model] = core
        return core

    def forget(self, model: LoadedModel) -> None:
        """Drop the core of a version a reload removed (call on the event loop), so the
        version's memory goes once its last in-flight call ends; such calls still finish,
        on a core of their own."""
        self._retired.add(model)
        self._cores.pop(model, None)

    async def run(
        self, model: LoadedModel, inputs: Sequence[SeriesInput], *, alone: bool = False
    ) -> list[SeriesOutput]:
        """The inference core's outputs for `inputs` (checked by service.inputs).

        `alone`: run these inputs as one batch of their own, never joined with other
        calls, so that running them again gives bit-identical outputs.
        """
        steps = work_steps(inputs)
        note_model(model)
        if model.ranged:
            self._check_range(model, inputs)
        ticket = perf_counter() if self._records is not None else self._hooks.queued(model)
        if steps > self._inline_max_steps:
            return await self._run_pooled(model, inputs, steps, ticket)
        if alone:
            return self._predict(self.core(model), inputs, ticket)
        loop = asyncio.get_running_loop()
        waiting = self._waiting.get(model)
        if waiting is None:
            waiting = self._waiting[model] = []
            if self._crowded:  # two turns or more: see above
                loop.call_soon(self._wait_turn, loop, model, 0, 1)
            else:
                loop.call_soon(self._flush, model)
        call = _Call(inputs, steps, loop.create_future(), ticket)
        waiting.append(call)
        return await call.future

    def _check_range(self, model: LoadedModel, inputs: Sequence[SeriesInput]) -> None:
        """Count (and log, when asked) input values far outside the training range."""
        n, low, high = model.client_inputs, model.far_low, model.far_high
        far = 0
        for s in inputs:
            values = s.values[:, :n]  # the client's columns (not computed calendar ones)
            far += int(np.count_nonzero((values < low) | (values > high)))
        if far:
            self._hooks.far_out(model, far)
            if self._log_far_out:
                log.warning(
                    "%d input value(s) for %s v%d lie beyond its training range by more than "
                    "%g std",
                    far,
                    model.name,
                    model.version,
                    model.manifest.input_range.k if model.manifest.input_range else 0.0,
                )

    async def _run_pooled(
        self, model: LoadedModel, inputs: Sequence[SeriesInput], steps: int, ticket: object
    ) -> list[SeriesOutput]:
        """On a worker thread, once one of the `pool_runs` slots is free (or Overloaded)."""
        waits = self._pool.locked()
        if waits:
            if self._queued_steps + steps > self._pool_queue_steps:
                raise Overloaded(self._queued_steps, self._pool_queue_steps)
            self._queued_steps += steps
        try:
            await self._pool.acquire()  # in arrival order
        finally:
            if waits:
                self._queued_steps -= steps
        # The slot is released when the run ends, not when its caller leaves (a client
        # gone, a shutdown): a thread cannot be stopped, so it still holds a core.
        run = asyncio.ensure_future(run_sync(self._predict, self.core(model), inputs, ticket))
        run.add_done_callback(self._release)
        return await asyncio.shield(run)

    def _release(self, run: asyncio.Future[list[SeriesOutput]]) -> None:
        self._pool.release()
        if not run.cancelled():
            run.exception()  # retrieved here too, for a caller that has left

    def _predict(
        self, core: InferenceCore, inputs: Sequence[SeriesInput], ticket: object
    ) -> list[SeriesOutput]:
        """Run one call at once (on the event loop, or on a worker thread)."""
        records = self._records
        if records is None:
            with self._hooks.batch(core, (ticket,)):
                return core.predict(inputs)
        runs: list[tuple[int, int]] = []
        start = perf_counter()
        outputs = core.predict(inputs, runs)
        end = perf_counter()
        made = (Ran(cast(float, ticket)),)
        records.append(noted(core, start, end, made, len(inputs), work_steps(inputs), runs))
        self._hooks.drain()
        return outputs

    def _wait_turn(
        self, loop: asyncio.AbstractEventLoop, model: LoadedModel, seen: int, turns: int
    ) -> None:
        """Under load: one more turn while calls keep joining (up to MAX_TURNS), then flush."""
        joined = len(self._waiting[model])
        if joined > seen and turns < MAX_TURNS:
            loop.call_soon(self._wait_turn, loop, model, joined, turns + 1)
        else:
            self._flush(model)

    def _flush(self, model: LoadedModel) -> None:
        calls = self._waiting.pop(model)
        self._crowded = len(calls) > 1
        core = self.core(model)
        records = self._records
        for batch, steps in _batches(calls, self._inline_max_steps):
            if records is None:
                with self._hooks.batch(core, [call.ticket for call in batch]):
                    _run_batch(core, batch, steps, None)
            else:
                _run_batch(core, batch, steps, records)
        if records is not None and len(records) >= DRAIN_AT:
            self._hooks.drain()


def _batches(calls: list[_Call], max_steps: int) -> Iterator[tuple[list[_Call], int]]:
    """Consecutive groups of calls, each at most `max_steps` of work (or a single call),
    with their steps."""
    batch: list[_Call] = []
    steps = 0
    for call in calls:
        if batch and steps + call.steps > max_steps:
            yield batch, steps
            batch, steps = [], 0
        batch.append(call)
        steps += call.steps
    if batch:
        yield batch, steps


def _run_batch(
    core: InferenceCore, batch: list[_Call], steps: int, records: list[RunRecord] | None
) -> None:
    """Answer the batch's calls (of `steps` steps in all) with one inference-core call (or
    one each, when that fails); note each core call that answered in `records`, when given."""
    live = [call for call in batch if not call.future.done()]  # a cancelled caller is gone
    if len(live) > 1:
        inputs = [s for call in live for s in call.inputs]
        runs: list[tuple[int, int]] | None = [] if records is not None else None
        start = perf_counter()
        try:
            outputs = core.predict(inputs, runs)
        except Exception:
            # An input error belongs to one caller: answer each alone below, so that only
            # the caller at fault gets it and the others their predictions.
            pass
        else:
            if records is not None:
                assert runs is not None
                if len(live) < len(batch):
                    steps = sum([call.steps for call in live])
                records.append(noted(core, start, perf_counter(), live, len(inputs), steps, runs))
            first = 0
            for call in live:
                last = first + len(call.inputs)
                call.future.set_result(outputs[first:last])
                first = last
            return
    for call in live:
        future = call.future
        runs = [] if records is not None else None
        start = perf_counter()
        try:
            outputs = core.predict(call.inputs, runs)
        except Exception as exc:
            future.set_exception(exc)
        else:
            if records is not None:
                assert runs is not None
                end = perf_counter()
                records.append(noted(core, start, end, (call,), len(call.inputs), call.steps, runs))
            future.set_result(outputs)
