"""Bounded memory: chunked runs give the single run's answers; work and the pool are capped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.api.errors import as_api_error
from service.inference import InferenceCore, SeriesInput
from service.repository import LoadedModel, load_version
from service.runner import ModelRunner, Overloaded
from service.settings import Settings

MakeClient = Callable[..., AbstractContextManager[TestClient]]


def load(version_dir: Path) -> LoadedModel:
    return load_version(version_dir, ["CPUExecutionProvider"], ort.SessionOptions())


def random_inputs(model: LoadedModel, rng: np.random.Generator) -> list[SeriesInput]:
    """Series of mixed lengths (two share one, so they run as a batch of two), random
    non-zero states, and multi-step horizons where the model can roll out."""
    layers, hidden = model.state_shape
    features = model.manifest.architecture.input_size
    horizon = 6 if model.manifest.can_roll_out else 1
    out = []
    for length in (61, 61, 23, 1):
        out.append(
            SeriesInput(
                values=rng.normal(size=(length, features)).astype(np.float32),
                h=rng.normal(size=(layers, hidden)).astype(np.float32),
                c=(
                    rng.normal(size=(layers, hidden)).astype(np.float32)
                    if model.manifest.is_lstm
                    else None
                ),
                horizon=horizon,
            )
        )
    return out


@pytest.mark.parametrize("name", ["tiny-rnn", "tiny-lstm", "tiny-gru", "two-in-two-out"])
@pytest.mark.parametrize("chunk_steps", [1, 7, 40])
def test_chunked_runs_match_one_run(model_dir: Path, name: str, chunk_steps: int) -> None:
    model = load(model_dir / name / "1")
    inputs = random_inputs(model, np.random.default_rng(len(name) + chunk_steps))
    whole = InferenceCore(model, chunk_steps=10**9).predict(inputs)
    chunked = InferenceCore(model, chunk_steps=chunk_steps).predict(inputs)
    for one, parts in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(parts.predictions, one.predictions, atol=1e-6, rtol=0)
        np.testing.assert_allclose(parts.forecast, one.forecast, atol=1e-6, rtol=0)
        np.testing.assert_allclose(parts.h, one.h, atol=1e-6, rtol=0)
        if model.manifest.is_lstm:
            assert parts.c is not None
            assert one.c is not None
            np.testing.assert_allclose(parts.c, one.c, atol=1e-6, rtol=0)
        else:
            assert parts.c is None
    targets = model.manifest.architecture.output_size
    assert chunked[0].forecast.shape == (inputs[0].horizon, targets)


def test_the_service_answers_the_same_with_small_chunks(make_client: MakeClient) -> None:
    body = {
        "series": [
            {"values": [0.1 * i for i in range(50)], "horizon": 4},
            {"values": [0.05 * i for i in range(50)], "horizon": 4},
        ]
    }
    answers = []
    for chunk_steps in (10**6, 6):
        with make_client(chunk_steps=chunk_steps) as client:
            response = client.post("/v1/models/tiny-lstm/predict", json=body)
            assert response.status_code == 200
            answers.append(response.json()["series"])
    for one, parts in zip(*answers, strict=True):
        np.testing.assert_allclose(parts["forecast"], one["forecast"], atol=1e-6)
        np.testing.assert_allclose(parts["state"]["h"], one["state"]["h"], atol=1e-6)
        np.testing.assert_allclose(parts["state"]["c"], one["state"]["c"], atol=1e-6)


def test_work_over_the_cap_is_refused_naming_the_limit(make_client: MakeClient) -> None:
    # Each series is within the per-series limits; together they are over the cap.
    with make_client(max_values_per_series=100, max_horizon=10, max_work_per_request=250) as c:
        fits = {"series": [{"values": [0.5] * 100, "horizon": 10}] * 2}  # 2 x 109 steps
        assert c.post("/v1/models/tiny-lstm/predict", json=fits).status_code == 200
        over = {"series": [{"values": [0.5] * 100, "horizon": 10}] * 3}  # 327 steps
        response = c.post("/v1/models/tiny-lstm/predict", json=over)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "limit_exceeded"
    assert error["field"] == "series"
    assert "327 steps" in error["message"]
    assert "max_work_per_request=250" in error["message"]


def test_work_cap_below_one_series_is_an_invalid_setting() -> None:
    with pytest.raises(ValidationError, match="max_work_per_request=100 is below one series"):
        Settings(max_values_per_series=100, max_horizon=2, max_work_per_request=100)
    Settings(max_values_per_series=100, max_horizon=2, max_work_per_request=101)


@pytest.fixture(scope="module")
def lstm(model_dir: Path) -> LoadedModel:
    return load(model_dir / "tiny-lstm" / "1")


def big(model: LoadedModel, steps: int) -> list[SeriesInput]:
    return [SeriesInput(values=np.linspace(-1, 1, steps, dtype=np.float32).reshape(-1, 1))]


@pytest.mark.anyio
async def test_pool_queue_is_bounded_by_waiting_work(lstm: LoadedModel) -> None:
    # One run at a time; room for one waiting call of 100 steps, not two.
    runner = ModelRunner(inline_max_steps=10, pool_runs=1, pool_queue_steps=150)
    first = asyncio.ensure_future(runner.run(lstm, big(lstm, 100)))
    await asyncio.sleep(0)  # the first takes the only slot
    second = asyncio.ensure_future(runner.run(lstm, big(lstm, 100)))
    await asyncio.sleep(0)  # the second waits in the queue
    with pytest.raises(Overloaded, match="pool_queue_steps=150") as caught:
        await runner.run(lstm, big(lstm, 100))
    # Small calls never queue behind the pool: they run on the event loop.
    small = await runner.run(lstm, big(lstm, 5))
    assert small[0].predictions.shape == (5, 1)
    answers = await asyncio.gather(first, second)
    want = InferenceCore(lstm).predict(big(lstm, 100))[0].predictions
    for answer in answers:
        np.testing.assert_allclose(answer[0].predictions, want, atol=1e-6)
    # With the pool free again, the same call is taken.
    again = await runner.run(lstm, big(lstm, 100))
    np.testing.assert_allclose(again[0].predictions, want, atol=1e-6)
    err = as_api_error(caught.value)
    assert err is not None
    assert (err.status, err.code) == (503, "overloaded")
    assert err.headers == {"Retry-After": "1"}


@pytest.mark.anyio
async def test_a_cancelled_caller_keeps_its_slot_until_the_run_ends(lstm: LoadedModel) -> None:
    runner = ModelRunner(inline_max_steps=10, pool_runs=1, pool_queue_steps=0)
    first = asyncio.ensure_future(runner.run(lstm, big(lstm, 2000)))
    await asyncio.sleep(0)
    first.cancel()
    # The thread still runs: the slot is not free, and the queue holds nothing.
    with pytest.raises(Overloaded):
        await runner.run(lstm, big(lstm, 100))
    with pytest.raises(asyncio.CancelledError):
        await first
    # Once the abandoned run has ended, its slot is free again.
    for _ in range(1000):
        try:
            answer = await runner.run(lstm, big(lstm, 100))
            break
        except Overloaded:
            await asyncio.sleep(0.01)
    assert answer[0].predictions.shape == (100, 1)
