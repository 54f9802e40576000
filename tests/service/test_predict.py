"""POST /v1/models/{name}/predict: values, state, horizon and multi-series answers."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.concurrency import run_in_threadpool

from service import runner as runner_module
from tests.service.oracle import Oracle

SINGLE = ["tiny-rnn", "tiny-lstm", "tiny-gru"]
LATEST = {"tiny-rnn": 1, "tiny-lstm": 2, "tiny-gru": 1, "two-in-one-out": 1, "two-in-two-out": 1}


def predict(
    client: TestClient, name: str, body: dict[str, Any], version: int | None = None
) -> dict[str, Any]:
    url = f"/v1/models/{name}" + (f"/versions/{version}" if version else "") + "/predict"
    response = client.post(url, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answer: dict[str, Any] = response.json()
    return answer


def oracle(model_dir: Path, name: str, version: int | None = None) -> Oracle:
    return Oracle(model_dir / name / str(version or LATEST[name]))


@pytest.mark.parametrize("name", SINGLE)
def test_predictions_and_state_match_onnxruntime(
    api: TestClient, model_dir: Path, name: str
) -> None:
    values = np.sin(np.arange(12) * 0.4) * 3.0
    body = predict(api, name, {"series": [{"values": values.tolist()}], "return_predictions": True})
    preds, h, c = oracle(model_dir, name).run(values[:, None])
    (series,) = body["series"]
    assert (body["model"], body["version"]) == (name, LATEST[name])
    np.testing.assert_allclose(series["predictions"], preds[:, 0], atol=1e-5)
    np.testing.assert_allclose(series["forecast"], preds[-1:, 0], atol=1e-5)
    assert series["state"]["model"] == name
    assert series["state"]["version"] == LATEST[name]
    np.testing.assert_allclose(series["state"]["h"], h, atol=1e-5)
    if c is None:
        assert "c" not in series["state"]
    else:
        np.testing.assert_allclose(series["state"]["c"], c, atol=1e-5)


def test_a_given_version_is_used(api: TestClient, model_dir: Path) -> None:
    values = [0.5, -1.0, 2.0]
    v1 = predict(api, "tiny-lstm", {"series": [{"values": values}]}, version=1)
    v2 = predict(api, "tiny-lstm", {"series": [{"values": values}]})
    assert v1["version"] == 1
    assert v2["version"] == 2
    assert v1["series"][0]["state"]["version"] == 1
    expected, _, _ = oracle(model_dir, "tiny-lstm", 1).run(np.array(values)[:, None])
    np.testing.assert_allclose(v1["series"][0]["forecast"], expected[-1:, 0], atol=1e-5)
    assert v1["series"][0]["forecast"] != v2["series"][0]["forecast"]


@pytest.mark.parametrize("name", SINGLE)
def test_continuing_from_a_state(api: TestClient, model_dir: Path, name: str) -> None:
    first = predict(api, name, {"series": [{"values": [0.1, 0.2, 0.3]}]})
    state = first["series"][0]["state"]
    second = predict(
        api, name, {"series": [{"values": [0.4, 0.5], "state": state}], "return_predictions": True}
    )
    ref = oracle(model_dir, name)
    h0 = np.array(state["h"], np.float32)
    c0 = np.array(state["c"], np.float32) if "c" in state else None
    preds, h, _ = ref.run(np.array([[0.4], [0.5]]), h0, c0)
    np.testing.assert_allclose(second["series"][0]["predictions"], preds[:, 0], atol=1e-5)
    np.testing.assert_allclose(second["series"][0]["state"]["h"], h, atol=1e-5)


@pytest.mark.parametrize("name", SINGLE)
def test_horizon_rolls_out_but_returns_the_state_after_the_values(
    api: TestClient, model_dir: Path, name: str
) -> None:
    values = np.array([0.3, -0.2, 1.1, 0.7])
    body = predict(api, name, {"series": [{"values": values.tolist(), "horizon": 5}]})
    (series,) = body["series"]
    ref = oracle(model_dir, name)
    preds, h, c = ref.run(values[:, None])
    expected = [preds[-1, 0]]
    h_roll, c_roll = h, c
    for _ in range(4):  # feed each prediction back, in original units
        step, h_roll, c_roll = ref.run(np.array([[expected[-1]]]), h_roll, c_roll)
        expected.append(step[0, 0])
    assert len(series["forecast"]) == 5
    np.testing.assert_allclose(series["forecast"], expected, atol=1e-5)
    np.testing.assert_allclose(series["state"]["h"], h, atol=1e-5)
    assert not np.allclose(series["state"]["h"], h_roll, atol=1e-5)


def test_many_series_of_mixed_lengths_states_and_horizons(api: TestClient, model_dir: Path) -> None:
    first = predict(api, "tiny-lstm", {"series": [{"values": [1.0, 2.0]}]})
    state = first["series"][0]["state"]
    series = [
        {"values": [0.1, 0.2, 0.3]},
        {"values": [0.5], "horizon": 3},
        {"values": [0.3, 0.2, 0.1], "state": state, "horizon": 2},
        {"values": [-1.0, 0.0, 1.0, 2.0, 3.0]},
    ]
    body = predict(api, "tiny-lstm", {"series": series, "return_predictions": True})
    assert len(body["series"]) == 4
    ref = oracle(model_dir, "tiny-lstm")
    for sent, got in zip(series, body["series"], strict=True):
        start = sent.get("state")
        h0 = np.array(start["h"], np.float32) if start else None
        c0 = np.array(start["c"], np.float32) if start else None
        preds, h, c = ref.run(np.array(sent["values"])[:, None], h0, c0)
        np.testing.assert_allclose(got["predictions"], preds[:, 0], atol=1e-5)
        np.testing.assert_allclose(got["forecast"][0], preds[-1, 0], atol=1e-5)
        assert len(got["forecast"]) == sent.get("horizon", 1)
        np.testing.assert_allclose(got["state"]["h"], h, atol=1e-5)
        np.testing.assert_allclose(got["state"]["c"], c, atol=1e-5)


def test_one_series_alone_equals_it_within_a_batch(api: TestClient) -> None:
    alone = predict(api, "tiny-gru", {"series": [{"values": [0.4, 0.1, -0.3], "horizon": 3}]})
    batch = predict(
        api,
        "tiny-gru",
        {"series": [{"values": [2.0, 2.0, 2.0]}, {"values": [0.4, 0.1, -0.3], "horizon": 3}]},
    )
    np.testing.assert_allclose(
        batch["series"][1]["forecast"], alone["series"][0]["forecast"], atol=1e-6
    )
    np.testing.assert_allclose(
        batch["series"][1]["state"]["h"], alone["series"][0]["state"]["h"], atol=1e-6
    )


def test_rows_for_a_multi_feature_model(api: TestClient, model_dir: Path) -> None:
    rows = [[0.1, 1.0], [0.2, 0.5], [0.3, -0.5]]
    body = predict(
        api, "two-in-one-out", {"series": [{"values": rows}], "return_predictions": True}
    )
    preds, h, _ = oracle(model_dir, "two-in-one-out").run(np.array(rows))
    (series,) = body["series"]
    np.testing.assert_allclose(series["predictions"], preds[:, 0], atol=1e-5)
    np.testing.assert_allclose(series["forecast"], preds[-1:, 0], atol=1e-5)
    np.testing.assert_allclose(series["state"]["h"], h, atol=1e-5)
    assert "c" not in series["state"]


def test_several_targets_answer_rows_and_roll_out(api: TestClient, model_dir: Path) -> None:
    rows = [[0.1, 1.0], [0.2, 0.5]]
    body = predict(api, "two-in-two-out", {"series": [{"values": rows, "horizon": 3}]})
    (series,) = body["series"]
    ref = oracle(model_dir, "two-in-two-out")
    preds, h, c = ref.run(np.array(rows))
    step1, _, _ = ref.run(preds[-1:], h, c)
    assert np.array(series["forecast"]).shape == (3, 2)
    np.testing.assert_allclose(series["forecast"][0], preds[-1], atol=1e-5)
    np.testing.assert_allclose(series["forecast"][1], step1[0], atol=1e-5)


@pytest.mark.parametrize(
    ("flags", "keys"),
    [
        ({}, {"forecast", "state"}),
        ({"return_state": False}, {"forecast"}),
        ({"return_predictions": True}, {"forecast", "state", "predictions"}),
        ({"return_predictions": True, "return_state": False}, {"forecast", "predictions"}),
    ],
)
def test_what_is_returned(api: TestClient, flags: dict[str, bool], keys: set[str]) -> None:
    body = predict(api, "tiny-rnn", {"series": [{"values": [1.0, 2.0]}], **flags})
    assert set(body["series"][0]) == keys


def test_thread_pool_and_inline_give_the_same_answer(
    make_client: Callable[..., AbstractContextManager[TestClient]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pooled: list[int] = []

    async def counting(func: Callable[..., Any], *args: Any) -> Any:
        pooled.append(1)
        return await run_in_threadpool(func, *args)

    monkeypatch.setattr(runner_module, "run_sync", counting)
    body = {"series": [{"values": [0.1 * i for i in range(30)], "horizon": 4}] * 3}
    answers = []
    for inline_max_steps in (0, 99):  # 99 steps in this request: pooled, then inline
        with make_client(inline_max_steps=inline_max_steps) as c:
            answers.append(predict(c, "tiny-lstm", body))
        assert len(pooled) == 1
    assert answers[0] == answers[1]
