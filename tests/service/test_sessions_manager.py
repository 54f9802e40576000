"""The step decision of SessionManager when two writers race on one session.

Two managers over one store stand for two replicas: their per-process locks do
not see each other, so only the store's compare-and-advance keeps a step from
being lost or applied twice. A runner that yields before answering makes both
read the session before either writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import numpy as np
import onnxruntime as ort
import pytest

from service.inference import SeriesInput, SeriesOutput
from service.inputs import Limits
from service.repository import LoadedModel, ModelRepository, load_repository
from service.runner import ModelRunner
from service.sessions.manager import (
    OffsetConflict,
    SessionManager,
    SessionNotFound,
    StepResult,
)
from service.sessions.memory import MemoryStore
from service.sessions.record import SessionRecord
from service.sessions.store import OwnerQuota
from tests.service.sessions_support import oracle, series

pytestmark = pytest.mark.anyio

LIMITS = Limits(max_series=8, max_values=10_000, max_horizon=16)
QUOTA = OwnerQuota(max_live=100, rate=100.0, burst=100)


@pytest.fixture(scope="module")
def repository(model_dir: Path) -> ModelRepository:
    return load_repository(model_dir, ["CPUExecutionProvider"], ort.SessionOptions())


class CountingStore(MemoryStore):
    """A memory store that counts reads (a step reads with get_now, others with get)."""

    def __init__(self) -> None:
        super().__init__(max_sessions=10, ttl_s=60)
        self.reads = 0

    def get_now(self, session_id: str) -> SessionRecord | None:
        self.reads += 1
        return super().get_now(session_id)


def replicas(
    repository: ModelRepository, recent_records: int = 0, delay_s: float = 0.05
) -> tuple[SessionManager, SessionManager, list[int]]:
    """Two managers over one store; the returned list counts model runs."""
    store = CountingStore()
    inner = ModelRunner(inline_max_steps=10_000).run
    runs: list[int] = []

    async def slow_run(
        model: LoadedModel, inputs: Sequence[SeriesInput], *, alone: bool = False
    ) -> list[SeriesOutput]:
        runs.append(1)
        await anyio.sleep(delay_s)  # both writers are now between their read and their write
        return await inner(model, inputs, alone=alone)

    def manager() -> SessionManager:
        return SessionManager(
            store, repository, slow_run, LIMITS, QUOTA, recent_records=recent_records
        )

    return manager(), manager(), runs


@pytest.mark.parametrize("recent", [0, 100])
async def test_the_same_step_from_two_replicas_is_applied_once(
    repository: ModelRepository, model_dir: Path, recent: int
) -> None:
    a, b, runs = replicas(repository, recent_records=recent)
    model = repository.get("tiny-lstm")
    assert model is not None
    record = await a.create(model, "")
    values = series(6).astype(np.float32)
    results: list[StepResult] = []

    async def step(manager: SessionManager) -> None:
        results.append(await manager.observe(record.id, "", 0, values.tolist(), 1))

    async with anyio.create_task_group() as tg:
        tg.start_soon(step, a)
        tg.start_soon(step, b)
    assert len(runs) == 2  # both ran the model ...
    assert sorted(r.replayed for r in results) == [False, True]  # ... one step was written
    assert np.array_equal(results[0].predictions, results[1].predictions)
    assert np.array_equal(results[0].forecast, results[1].forecast)
    stored = await a.get(record.id, "")
    assert stored.offset == 6
    preds, _, _ = oracle(model_dir, "tiny-lstm", 2).run(values)
    np.testing.assert_allclose(results[0].predictions, preds, atol=1e-5)


@pytest.mark.parametrize("recent", [0, 100])
async def test_different_steps_at_one_offset_one_wins_the_other_conflicts(
    repository: ModelRepository, recent: int
) -> None:
    a, b, _ = replicas(repository, recent_records=recent)
    model = repository.get("tiny-gru")
    assert model is not None
    record = await a.create(model, "")
    outcomes: list[object] = []

    async def step(manager: SessionManager, values: np.ndarray) -> None:
        try:
            outcomes.append(await manager.observe(record.id, "", 0, values.tolist(), 1))
        except OffsetConflict as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(step, a, np.ones((2, 1), np.float32))
        tg.start_soon(step, b, np.ones((3, 1), np.float32))
    conflicts = [o for o in outcomes if isinstance(o, OffsetConflict)]
    applied = [o for o in outcomes if isinstance(o, StepResult)]
    assert len(conflicts) == len(applied) == 1
    assert conflicts[0].current == applied[0].offset == (await a.get(record.id, "")).offset


async def test_steps_in_one_replica_queue_instead_of_racing(
    repository: ModelRepository,
) -> None:
    a, _, runs = replicas(repository)
    model = repository.get("tiny-rnn")
    assert model is not None
    record = await a.create(model, "")
    values = np.ones((1, 1), np.float32)
    results: list[StepResult] = []

    async def step() -> None:
        results.append(await a.observe(record.id, "", 0, values.tolist(), 1))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(step)
    assert len(runs) == 1  # the per-session lock: one model run, four replays
    assert sum(r.replayed for r in results) == 4


@pytest.mark.parametrize("cancelled", ["waiting", "given the turn"])
async def test_a_step_cancelled_in_the_queue_lets_the_next_go_on(
    repository: ModelRepository, cancelled: str
) -> None:
    """Steps of one session queue; one cancelled while it waits (or just as its turn
    comes) neither blocks the steps behind it nor stays in the queue."""
    a, _, runs = replicas(repository, delay_s=0.05)
    model = repository.get("tiny-rnn")
    assert model is not None
    record = await a.create(model, "")
    one = np.ones((1, 1), np.float32).tolist()
    done: list[int] = []
    second = anyio.CancelScope()

    async def first() -> None:
        done.append((await a.observe(record.id, "", 0, one, 1)).offset)
        if cancelled == "given the turn":
            second.cancel()  # the second step was just given its turn, and not yet run

    async def step(offset: int) -> None:
        with second:
            done.append((await a.observe(record.id, "", offset, one, 1)).offset)

    async def third() -> None:
        done.append((await a.observe(record.id, "", 1, one, 1)).offset)

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)  # in flight: its run takes 50 ms
        await anyio.sleep(0.01)
        tg.start_soon(step, 1)  # waits behind the first
        await anyio.sleep(0.005)
        tg.start_soon(third)  # and this one behind it
        await anyio.sleep(0.005)
        if cancelled == "waiting":
            second.cancel()
    assert done == [1, 2]  # the step behind the cancelled one ran
    assert (await a.get(record.id, "")).offset == 2
    assert a._stepping == {}
    # The first and the third ran; the second may have begun its run before its
    # cancellation reached it (never its compare-and-advance).
    assert len(runs) == (2 if cancelled == "waiting" else 3)


async def test_remembered_records_skip_reads_and_survive_replica_switches(
    repository: ModelRepository, model_dir: Path
) -> None:
    a, b, runs = replicas(repository, recent_records=100, delay_s=0)
    store = a.store
    assert isinstance(store, CountingStore)
    model = repository.get("tiny-lstm")
    assert model is not None
    record = await a.create(model, "")
    values = series(24).astype(np.float32)
    chunks = np.split(values, 8)
    got: list[float] = []
    offset = 0
    # Four steps on a (no reads: it remembers its own writes), then alternate.
    order = [a, a, a, a, b, a, b, a]
    for manager, chunk in zip(order, chunks, strict=True):
        result = await manager.observe(record.id, "", offset, chunk.tolist(), 1)
        offset = result.offset
        got += result.predictions[:, 0].tolist()
    preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(values)
    np.testing.assert_allclose(got, preds[:, 0], atol=1e-5)
    # Each switch of replica reads once: the remembered record of the other replica
    # is behind the step's offset, so it is not used; no model run is wasted.
    assert store.reads == 4
    assert len(runs) == 8
    stored = await b.get(record.id, "")
    assert stored.offset == 24
    np.testing.assert_allclose(np.frombuffer(stored.h, "<f4").reshape(h.shape), h, atol=1e-5)
    assert c is not None


async def test_a_remembered_session_deleted_elsewhere_is_gone(
    repository: ModelRepository,
) -> None:
    a, b, _ = replicas(repository, recent_records=100, delay_s=0)
    model = repository.get("tiny-rnn")
    assert model is not None
    record = await a.create(model, "")
    one = np.ones((1, 1), np.float32)
    await a.observe(record.id, "", 0, one.tolist(), 1)
    await b.delete(record.id, "")
    with pytest.raises(SessionNotFound):
        await a.observe(record.id, "", 1, one.tolist(), 1)
