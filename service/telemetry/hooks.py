"""What the model runner and the session manager call so that their work is measured.

The defaults do nothing (metrics and tracing off); service.telemetry.setup builds the
ones that count and trace. Both layers call them where the work happens, so every way
in (the front door's routes, FastAPI's routes, the WebSocket stream) is measured alike.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, NamedTuple, Protocol

from service.inference import InferenceCore
from service.repository import LoadedModel
from service.sessions.store import SessionStore

StepOutcome = Literal["applied", "replayed", "conflict"]


class Noted(Protocol):
    """One call an inference-core run answered: its ticket, the perf_counter time it was
    made at."""

    @property
    def ticket(self) -> Any: ...


class Ran(NamedTuple):
    """A call run on its own (Noted)."""

    ticket: float


# One inference-core call, noted when it ends (`noted`): the core, its perf_counter start
# and end, how long each call it answered waited for it to start (raw doubles), the
# series and recurrent steps it ran, and the ONNX Runtime runs the core reported making,
# as (series per run, number of such runs). Numbers only: a record keeps no request's
# objects alive, so the memory a request used is free for the next one while records
# wait to be counted.
RunRecord = tuple[InferenceCore, float, float, "array[float]", int, int, list[tuple[int, int]]]


def noted(
    core: InferenceCore,
    start: float,
    end: float,
    calls: Sequence[Noted],
    series: int,
    steps: int,
    runs: list[tuple[int, int]],
) -> RunRecord:
    """The record of one inference-core call that answered `calls`."""
    waits = array("d", [start - call.ticket for call in calls])
    return core, start, end, waits, series, steps, runs


# The runner drains its records once it holds this many (and the hooks before a scrape).
DRAIN_AT = 256


class RunHooks(Protocol):
    """Called by service.runner.ModelRunner.

    Two ways to measure: with `records` (metrics without tracing) the runner appends one
    RunRecord to that list per inference-core call and calls `drain` now and then, which
    costs the hot path two clock readings and an append; without (tracing) it wraps each
    batch in `batch` and runs it on a core that `core` made.
    """

    records: list[RunRecord] | None

    def core(self, model: LoadedModel, chunk_steps: int) -> InferenceCore:
        """The inference core to run this model version with (made once per version)."""

    def queued(self, model: LoadedModel) -> object:
        """A call for this model was made; returns its ticket (when, and its trace)."""

    def batch(self, core: InferenceCore, tickets: Sequence[object]) -> AbstractContextManager[None]:
        """These calls start to run as one batch on `core` (one that `core()` made); the
        batch runs inside the context."""

    def drain(self) -> None:
        """Count the records the runner appended (and empty the list); thread-safe."""

    def far_out(self, model: LoadedModel, count: int) -> None:
        """A call for this model had `count` input values far outside its training range."""


class SessionHooks(Protocol):
    """Called by service.sessions.manager.SessionManager and its factory."""

    def wrap_store(self, store: SessionStore) -> SessionStore:
        """The store the manager uses: `store` itself, or one that measures it."""

    def created(self, model: LoadedModel) -> None:
        """A session on this model version was created."""

    def step(self, model: LoadedModel, outcome: StepOutcome) -> None:
        """A step was applied, answered as a replay, or refused for its offset (409)."""


_NULL: AbstractContextManager[None] = nullcontext()


class NoRunHooks:
    records: list[RunRecord] | None = None

    def core(self, model: LoadedModel, chunk_steps: int) -> InferenceCore:
        return InferenceCore(model, chunk_steps)

    def queued(self, model: LoadedModel) -> object:
        return None

    def batch(self, core: InferenceCore, tickets: Sequence[object]) -> AbstractContextManager[None]:
        return _NULL

    def drain(self) -> None:
        pass

    def far_out(self, model: LoadedModel, count: int) -> None:
        pass


class NoSessionHooks:
    def wrap_store(self, store: SessionStore) -> SessionStore:
        return store

    def created(self, model: LoadedModel) -> None:
        pass

    def step(self, model: LoadedModel, outcome: StepOutcome) -> None:
        pass


NO_RUN_HOOKS: RunHooks = NoRunHooks()
NO_SESSION_HOOKS: SessionHooks = NoSessionHooks()
