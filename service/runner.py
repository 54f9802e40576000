"""How the service runs the inference core: inline or on a worker thread, in shared batches.

A small recurrent model costs microseconds per step, less than the hop to a worker
thread, so small calls run on the event loop (`inline_max_steps`, measured in
docs/benchmarks.md); larger ones go to the thread pool and never block the loop.

Small calls for the same model that arrive together are answered by one
`InferenceCore.predict`: the first schedules a flush for the next turn of the event
loop, and every call made before that turn joins it. Under concurrent load this
turns many `session.run` calls of batch 1 into one of batch N, at the cost of one
loop turn of latency; a lone request waits for nothing. Predictions do not depend
on what else is in the batch (each series is its own row, with its own state).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from anyio.to_thread import run_sync

from service.inference import InferenceCore, SeriesInput, SeriesOutput, work_steps
from service.repository import LoadedModel
from service.telemetry.context import note_model
from service.telemetry.hooks import NO_RUN_HOOKS, RunHooks


@dataclass(slots=True)
class _Call:
    inputs: Sequence[SeriesInput]
    steps: int
    future: asyncio.Future[list[SeriesOutput]]
    ticket: object  # from RunHooks.queued (metrics, tracing)


class ModelRunner:
    """Runs predictions for every model of one app; one instance per app (lifespan)."""

    def __init__(self, inline_max_steps: int, hooks: RunHooks = NO_RUN_HOOKS) -> None:
        self._inline_max_steps = inline_max_steps
        self._hooks = hooks  # metrics and tracing (service.telemetry)
        # One InferenceCore per loaded model version: it precomputes the scaling vectors.
        self._cores: WeakKeyDictionary[LoadedModel, InferenceCore] = WeakKeyDictionary()
        self._waiting: dict[LoadedModel, list[_Call]] = {}

    def core(self, model: LoadedModel) -> InferenceCore:
        core = self._cores.get(model)
        if core is None:
            core = self._cores[model] = self._hooks.core(model)
        return core

    async def run(
        self, model: LoadedModel, inputs: Sequence[SeriesInput], *, alone: bool = False
    ) -> list[SeriesOutput]:
        """The inference core's outputs for `inputs` (checked by service.inputs).

        `alone`: run these inputs as one batch of their own, never joined with other
        calls, so that running them again gives bit-identical outputs.
        """
        steps = work_steps(inputs)
        note_model(model)
        ticket = self._hooks.queued(model)
        if steps > self._inline_max_steps:
            return await run_sync(self._predict, self.core(model), inputs, ticket)
        if alone:
            return self._predict(self.core(model), inputs, ticket)
        loop = asyncio.get_running_loop()
        waiting = self._waiting.get(model)
        if waiting is None:
            waiting = self._waiting[model] = []
            loop.call_soon(self._flush, model)
        call = _Call(inputs, steps, loop.create_future(), ticket)
        waiting.append(call)
        return await call.future

    def _predict(
        self, core: InferenceCore, inputs: Sequence[SeriesInput], ticket: object
    ) -> list[SeriesOutput]:
        with self._hooks.batch(core.model, (ticket,)):
            return core.predict(inputs)

    def _flush(self, model: LoadedModel) -> None:
        calls = self._waiting.pop(model)
        core = self.core(model)
        for batch in _batches(calls, self._inline_max_steps):
            with self._hooks.batch(model, [call.ticket for call in batch]):
                _run_batch(core, batch)


def _batches(calls: list[_Call], max_steps: int) -> Iterator[list[_Call]]:
    """Consecutive groups of calls, each at most `max_steps` of work (or a single call)."""
    batch: list[_Call] = []
    steps = 0
    for call in calls:
        if batch and steps + call.steps > max_steps:
            yield batch
            batch, steps = [], 0
        batch.append(call)
        steps += call.steps
    if batch:
        yield batch


def _run_batch(core: InferenceCore, batch: list[_Call]) -> None:
    live = [call for call in batch if not call.future.done()]  # a cancelled caller is gone
    if len(live) > 1:
        try:
            outputs = core.predict([s for call in live for s in call.inputs])
        except Exception:
            # An input error belongs to one caller: answer each alone below, so that only
            # the caller at fault gets it and the others their predictions.
            pass
        else:
            start = 0
            for call in live:
                end = start + len(call.inputs)
                call.future.set_result(outputs[start:end])
                start = end
            return
    for call in live:
        try:
            call.future.set_result(core.predict(call.inputs))
        except Exception as exc:
            call.future.set_exception(exc)
