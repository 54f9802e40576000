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
import orjson
import pytest

from service.inference import SeriesInput, SeriesOutput
from service.repository import LoadedModel, ModelRepository, load_repository
from service.sessions.factory import encode_rows, make_runner
from service.sessions.manager import OffsetConflict, SessionManager, StepResult
from service.sessions.memory import MemoryStore
from tests.service.sessions_support import oracle, series

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def repository(model_dir: Path) -> ModelRepository:
    return load_repository(model_dir, ["CPUExecutionProvider"], ort.SessionOptions())


def replicas(repository: ModelRepository) -> tuple[SessionManager, SessionManager, list[int]]:
    """Two managers over one store; the returned list counts model runs."""
    store = MemoryStore(max_sessions=10, ttl_s=60)
    inner = make_runner(inline_max_steps=10_000)
    runs: list[int] = []

    async def slow_run(model: LoadedModel, inputs: Sequence[SeriesInput]) -> list[SeriesOutput]:
        runs.append(1)
        await anyio.sleep(0.05)  # both writers are now between their read and their write
        return await inner(model, inputs)

    return (
        SessionManager(store, repository, slow_run, encode_rows),
        SessionManager(store, repository, slow_run, encode_rows),
        runs,
    )


async def test_the_same_step_from_two_replicas_is_applied_once(
    repository: ModelRepository, model_dir: Path
) -> None:
    a, b, runs = replicas(repository)
    model = repository.get("tiny-lstm")
    assert model is not None
    record = await a.create(model)
    values = series(6).astype(np.float32)
    results: list[StepResult] = []

    async def step(manager: SessionManager) -> None:
        results.append(await manager.observe(record.id, 0, lambda _: values, 1))

    async with anyio.create_task_group() as tg:
        tg.start_soon(step, a)
        tg.start_soon(step, b)
    assert len(runs) == 2  # both ran the model ...
    assert sorted(r.replayed for r in results) == [False, True]  # ... one step was written
    assert results[0].body == results[1].body
    stored = await a.get(record.id)
    assert stored.offset == 6
    preds, _, _ = oracle(model_dir, "tiny-lstm", 2).run(values)
    answer = orjson.loads(results[0].body)
    np.testing.assert_allclose(answer["predictions"], preds[:, 0], atol=1e-5)


async def test_different_steps_at_one_offset_one_wins_the_other_conflicts(
    repository: ModelRepository,
) -> None:
    a, b, _ = replicas(repository)
    model = repository.get("tiny-gru")
    assert model is not None
    record = await a.create(model)
    outcomes: list[object] = []

    async def step(manager: SessionManager, values: np.ndarray) -> None:
        try:
            outcomes.append(await manager.observe(record.id, 0, lambda _: values, 1))
        except OffsetConflict as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(step, a, np.ones((2, 1), np.float32))
        tg.start_soon(step, b, np.ones((3, 1), np.float32))
    conflicts = [o for o in outcomes if isinstance(o, OffsetConflict)]
    applied = [o for o in outcomes if isinstance(o, StepResult)]
    assert len(conflicts) == len(applied) == 1
    assert conflicts[0].current == applied[0].offset == (await a.get(record.id)).offset


async def test_steps_in_one_replica_queue_instead_of_racing(
    repository: ModelRepository,
) -> None:
    a, _, runs = replicas(repository)
    model = repository.get("tiny-rnn")
    assert model is not None
    record = await a.create(model)
    values = np.ones((1, 1), np.float32)
    results: list[StepResult] = []

    async def step() -> None:
        results.append(await a.observe(record.id, 0, lambda _: values, 1))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(step)
    assert len(runs) == 1  # the per-session lock: one model run, four replays
    assert sum(r.replayed for r in results) == 4
