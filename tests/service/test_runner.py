"""The service's model runner: concurrent small calls share one batch, answers unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from service.inference import InferenceCore, SeriesInput
from service.repository import LoadedModel, load_version
from service.runner import MAX_TURNS, ModelRunner
from tests.modelkit import write_model

pytestmark = pytest.mark.anyio


def load(version_dir: Path) -> LoadedModel:
    return load_version(version_dir, ["CPUExecutionProvider"], ort.SessionOptions())


def series(rng: np.random.Generator, length: int, lstm: bool, horizon: int = 1) -> SeriesInput:
    """Random values and a random non-zero state (one layer of 4 units)."""
    return SeriesInput(
        values=rng.normal(size=(length, 1)).astype(np.float32),
        h=rng.normal(size=(1, 4)).astype(np.float32),
        c=rng.normal(size=(1, 4)).astype(np.float32) if lstm else None,
        horizon=horizon,
    )


@pytest.fixture(scope="module")
def lstm(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load(write_model(tmp_path_factory.mktemp("runner"), "r-lstm", "lstm", hidden=4))


def count_predicts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch InferenceCore.predict to record the number of series of every call."""
    sizes: list[int] = []
    original = InferenceCore.predict

    def counting(self: InferenceCore, inputs: Any, runs: Any = None) -> Any:
        sizes.append(len(inputs))
        return original(self, inputs, runs)

    monkeypatch.setattr(InferenceCore, "predict", counting)
    return sizes


async def test_concurrent_calls_share_one_batch_and_get_their_own_answers(
    lstm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    # Mixed lengths and horizons, several series per call for some.
    calls = [[series(rng, n, True, h)] for n, h in [(20, 1), (20, 3), (5, 1), (20, 1), (1, 2)]]
    calls.append([series(rng, 20, True), series(rng, 7, True, 4)])
    alone = [InferenceCore(lstm).predict(inputs) for inputs in calls]

    sizes = count_predicts(monkeypatch)
    runner = ModelRunner(inline_max_steps=1024)
    together = await asyncio.gather(*(runner.run(lstm, inputs) for inputs in calls))

    assert sizes == [7]  # one predict over every series of the six calls
    for got, want in zip(together, alone, strict=True):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g.predictions, w.predictions, atol=1e-5)
            np.testing.assert_allclose(g.forecast, w.forecast, atol=1e-5)
            np.testing.assert_allclose(g.h, w.h, atol=1e-5)
            assert g.c is not None
            assert w.c is not None
            np.testing.assert_allclose(g.c, w.c, atol=1e-5)


async def test_batches_are_bounded_by_inline_max_steps(
    lstm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(8)
    calls = [[series(rng, 10, True)] for _ in range(7)]
    sizes = count_predicts(monkeypatch)
    runner = ModelRunner(inline_max_steps=30)  # three 10-step calls per batch
    await asyncio.gather(*(runner.run(lstm, inputs) for inputs in calls))
    assert sizes == [3, 3, 1]


async def test_a_call_after_the_flush_starts_a_new_batch(
    lstm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(9)
    sizes = count_predicts(monkeypatch)
    runner = ModelRunner(inline_max_steps=1024)
    first = await runner.run(lstm, [series(rng, 3, True)])
    second = await runner.run(lstm, [series(rng, 3, True)])
    assert sizes == [1, 1]
    assert first[0].predictions.shape == second[0].predictions.shape == (3, 1)


@pytest.mark.parametrize("crowded", [False, True])
async def test_under_load_a_call_made_a_loop_turn_later_still_joins_the_batch(
    lstm: LoadedModel, monkeypatch: pytest.MonkeyPatch, crowded: bool
) -> None:
    # Under concurrent load (the last batch answered several calls), a request whose
    # bytes arrive while the previous batch runs starts its handling one turn of the
    # event loop after the first call of the next batch: it joins that batch. A lone
    # call (the last batch answered one) does not wait for such a call.
    rng = np.random.default_rng(10)
    sizes = count_predicts(monkeypatch)
    runner = ModelRunner(inline_max_steps=1024)
    before = [[series(rng, 3, True)] for _ in range(2 if crowded else 1)]
    await asyncio.gather(*(runner.run(lstm, inputs) for inputs in before))
    first = asyncio.ensure_future(runner.run(lstm, [series(rng, 3, True)]))
    await asyncio.sleep(0)  # the first call runs up to its wait: its flush is scheduled
    assert not first.done()
    second = asyncio.ensure_future(runner.run(lstm, [series(rng, 3, True)]))
    await asyncio.gather(first, second)
    assert sizes == ([2, 2] if crowded else [1, 1, 1])


async def test_under_load_a_batch_waits_while_calls_keep_joining(
    lstm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Calls that join turn after turn all join (up to MAX_TURNS turns); once a turn
    # passes with none, the batch runs, and a later call starts the next one.
    rng = np.random.default_rng(11)
    sizes = count_predicts(monkeypatch)
    runner = ModelRunner(inline_max_steps=1024)
    await asyncio.gather(*(runner.run(lstm, [series(rng, 3, True)]) for _ in range(2)))
    calls = [asyncio.ensure_future(runner.run(lstm, [series(rng, 3, True)]))]
    for _ in range(MAX_TURNS - 2):
        await asyncio.sleep(0)
        calls.append(asyncio.ensure_future(runner.run(lstm, [series(rng, 3, True)])))
    await asyncio.gather(*calls)
    assert sizes == [2, MAX_TURNS - 1]
    for _ in range(MAX_TURNS + 2):  # one call a turn for longer than a batch waits
        await asyncio.sleep(0)
        calls.append(asyncio.ensure_future(runner.run(lstm, [series(rng, 3, True)])))
    await asyncio.gather(*calls)
    assert sum(sizes) == 2 + len(calls)
    assert len(sizes) > 3  # they did not all wait for one batch


async def test_an_error_reaches_only_the_call_at_fault(tmp_path: Path) -> None:
    model = load(write_model(tmp_path, "one-feature", "rnn", hidden=4))
    fine = [SeriesInput(values=np.array([[0.5], [0.25]], np.float32))]
    # Three features for a one-feature model: the batch cannot run, and neither can it alone.
    bad = [SeriesInput(values=np.zeros((2, 3), np.float32))]
    runner = ModelRunner(inline_max_steps=1024)
    results = await asyncio.gather(
        runner.run(model, fine), runner.run(model, bad), runner.run(model, fine),
        return_exceptions=True,
    )  # fmt: skip
    assert isinstance(results[1], Exception)
    want = InferenceCore(model).predict(fine)[0].predictions
    for ok in (results[0], results[2]):
        assert not isinstance(ok, BaseException)
        np.testing.assert_allclose(ok[0].predictions, want, atol=1e-6)


async def test_a_cancelled_caller_does_not_break_the_batch(lstm: LoadedModel) -> None:
    rng = np.random.default_rng(10)
    runner = ModelRunner(inline_max_steps=1024)
    gone = asyncio.ensure_future(runner.run(lstm, [series(rng, 4, True)]))
    kept = asyncio.ensure_future(runner.run(lstm, [series(rng, 4, True)]))
    await asyncio.sleep(0)  # both have joined the batch
    gone.cancel()
    out = await kept
    assert out[0].predictions.shape == (4, 1)
    assert gone.cancelled()
