"""Models with a target transform (log, differences) and intervals, trained for real and served:
the state carries the levels, so any chunking equals one call through client-carried state,
sessions and the WebSocket, and forecasts in levels match the training-side evaluation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from training.config import TrainConfig
from training.data import load_csv
from training.evaluate import path_levels
from training.onnx_export import check_parity, export_onnx, parity_record
from training.pipeline import Trained, train, training_inputs
from training.repository import build_manifest, write_version

# name -> (column of statsmodels' macrodata, transform, season)
MODELS = {
    "gdp-diff": ("realgdp", "diff", None),
    "cpi-logdiff": ("cpi", "log-diff", None),
    "gdp-seasonal": ("realgdp", "seasonal-diff", 4),
    "cpi-log": ("cpi", "log", None),  # no lag: the state is h and the interval scale
    "gdp-none": ("realgdp", "none", None),  # no transform: the plain path
}
LAGGED = ["gdp-diff", "cpi-logdiff", "gdp-seasonal"]


def _tiny(transform: str, season: int | None) -> TrainConfig:
    return TrainConfig(
        cell="gru",
        hidden_size=4,
        window=20,
        burn_in=2,
        batch_size=64,
        epochs=2,
        patience=2,
        test_rows=40,
        transform=transform,
        season=season,
    )


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Trained]]:
    from statsmodels.datasets import macrodata

    data = macrodata.load_pandas().data
    root = tmp_path_factory.mktemp("transformed")
    csv = root / "macro.csv"
    csv.write_text(
        "realgdp,cpi\n"
        + "\n".join(f"{g:.3f},{c:.3f}" for g, c in zip(data["realgdp"], data["cpi"], strict=True))
        + "\n"
    )
    repo = root / "models"
    out = {}
    for name, (column, transform, season) in MODELS.items():
        series = load_csv(csv, [column], [column])
        cfg = _tiny(transform, season)
        trained = train(series, cfg)
        onnx = export_onnx(trained.model)
        parity = parity_record(
            check_parity(trained.model, onnx, cfg.window, pool=training_inputs(trained)),
            cfg.window,
            True,
        )
        write_version(
            repo,
            name,
            onnx,
            lambda v, t=trained, n=name, o=onnx, p=parity: build_manifest(t, n, v, o, p),
        )
        out[name] = trained
    return repo, out


@pytest.fixture(scope="module")
def client(trained_models: tuple[Path, dict[str, Trained]]) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=trained_models[0]))) as c:
        yield c


def _values(trained: Trained) -> list[float]:
    return [float(v) for v in trained.series.targets[:, 0]]


def _predict(client: TestClient, name: str, series: dict[str, Any]) -> Any:
    r = client.post(
        f"/v1/models/{name}/predict", json={"series": [series], "return_predictions": True}
    )
    assert r.status_code == 200, r.text
    return r.json()["series"][0]


def _nan(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


@pytest.mark.parametrize("name", LAGGED)
@pytest.mark.parametrize("cuts", [[1], [2, 3, 50], [5, 6, 7, 100, 150]])
def test_chunked_predictions_equal_one_call_with_client_state(
    client: TestClient, trained_models: tuple[Path, dict[str, Trained]], name: str, cuts: list[int]
) -> None:
    values = _values(trained_models[1][name])
    whole = _predict(client, name, {"values": values, "horizon": 5})
    lag = trained_models[1][name].transform.lag
    assert len(whole["state"]["levels"]) == lag
    np.testing.assert_allclose(whole["state"]["levels"], values[-lag:], rtol=1e-6)
    got: list[float | None] = []
    state = None
    for chunk in np.split(np.array(values), cuts):
        body: dict[str, Any] = {"values": chunk.tolist(), "horizon": 5}
        if state is not None:
            body["state"] = state
        answer = _predict(client, name, body)
        got.extend(answer["predictions"])
        state = answer["state"]
    assert state is not None
    np.testing.assert_allclose(_nan(got), _nan(whole["predictions"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(answer["forecast"], whole["forecast"], rtol=1e-5)
    np.testing.assert_allclose(state["h"], whole["state"]["h"], atol=1e-5)
    np.testing.assert_allclose(state["levels"], whole["state"]["levels"])
    # The first `lag` values of a fresh stream only fill the levels: no prediction yet.
    assert whole["predictions"][:lag] == [None] * lag
    assert all(p is not None for p in whole["predictions"][lag:])


@pytest.mark.parametrize("name", list(MODELS))
def test_served_forecasts_in_levels_match_the_training_evaluation(
    client: TestClient, trained_models: tuple[Path, dict[str, Trained]], name: str
) -> None:
    trained = trained_models[1][name]
    values = _values(trained)
    lag = trained.transform.lag
    split = trained.split
    # The test span's one-step predictions, as training scored them (streaming, in levels).
    served = _predict(client, name, {"values": values})
    preds = _nan(served["predictions"])[split.val_end - 1 : -1]
    np.testing.assert_allclose(preds, trained.evaluation.predictions["streaming"][:, 0], rtol=2e-4)
    # Five-step forecasts from a few origins, as training's rollout makes them.
    origins = np.array([split.val_end - 1, split.val_end + 10, split.rows - 6])
    want = path_levels(
        trained.model,
        trained.model_series,
        trained.scalers,
        origins - lag,
        5,
        trained.transform,
        trained.series,
    )
    for k, origin in enumerate(origins):
        got = _predict(client, name, {"values": values[: origin + 1], "horizon": 5})
        np.testing.assert_allclose(got["forecast"], want[k, :, 0], rtol=2e-4)


def test_an_old_client_sending_only_h_gets_a_4xx_naming_levels(client: TestClient) -> None:
    answer = _predict(client, "gdp-diff", {"values": [2710.3, 2778.8, 2775.5]})
    state = {k: v for k, v in answer["state"].items() if k != "levels"}
    r = client.post(
        "/v1/models/gdp-diff/predict", json={"series": [{"values": [2785.2], "state": state}]}
    )
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"] == "series[0].state.levels"
    assert "differences its targets at lag 1" in error["message"]


def test_a_log_model_refuses_a_non_positive_value_naming_it(client: TestClient) -> None:
    r = client.post(
        "/v1/models/cpi-logdiff/predict", json={"series": [{"values": [28.9, 29.1, 0.0]}]}
    )
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"] == "series[0].values[2]"
    assert "must be greater than 0" in error["message"]


def test_levels_are_refused_by_a_model_without_a_lag(client: TestClient) -> None:
    answer = _predict(client, "cpi-log", {"values": [28.9, 29.1]})
    assert "levels" not in answer["state"]
    state = {**answer["state"], "levels": [1.0, 2.0]}
    r = client.post(
        "/v1/models/cpi-log/predict", json={"series": [{"values": [29.2], "state": state}]}
    )
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "series[0].state.levels"


@pytest.mark.parametrize("name", ["gdp-seasonal", "cpi-logdiff"])
def test_sessions_and_the_websocket_continue_exactly(
    client: TestClient, trained_models: tuple[Path, dict[str, Trained]], name: str
) -> None:
    values = _values(trained_models[1][name])[:60]
    whole = _predict(client, name, {"values": values, "horizon": 3})
    chunks = np.split(np.array(values), [1, 3, 4, 30])
    created = client.post(f"/v1/models/{name}/sessions", json={})
    assert created.status_code == 201, created.text
    session = created.json()["session"]
    got: list[float | None] = []
    offset = 0
    for chunk in chunks:
        r = client.post(
            f"/v1/sessions/{session}/observe",
            json={"values": chunk.tolist(), "offset": offset, "horizon": 3},
        )
        assert r.status_code == 200, r.text
        got.extend(r.json()["predictions"])
        offset += len(chunk)
        last = r.json()
    np.testing.assert_allclose(_nan(got), _nan(whole["predictions"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last["forecast"], whole["forecast"], rtol=1e-5)
    info = client.get(f"/v1/sessions/{session}?state=true").json()
    np.testing.assert_allclose(info["state"]["levels"], whole["state"]["levels"])
    # The WebSocket, on a session started from the first values' state.
    first = _predict(client, name, {"values": values[:10]})
    started = client.post(f"/v1/models/{name}/sessions", json={"state": first["state"]})
    assert started.status_code == 201, started.text
    ws_preds: list[float | None] = list(first["predictions"])
    with client.websocket_connect(
        f"/v1/models/{name}/stream?session={started.json()['session']}"
    ) as ws:
        json.loads(ws.receive_text())
        for chunk in np.split(np.array(values[10:]), [1, 5, 20]):
            ws.send_text(json.dumps({"values": chunk.tolist(), "horizon": 3}))
            answer = json.loads(ws.receive_text())
            ws_preds.extend(answer["predictions"])
    np.testing.assert_allclose(_nan(ws_preds), _nan(whole["predictions"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(answer["forecast"], whole["forecast"], rtol=1e-5)


def test_intervals_are_answered_and_nested(client: TestClient) -> None:
    values = [2710.3, 2778.8, 2775.5, 2785.2, 2847.7, 2834.4, 2839.0, 2802.6]
    answer = _predict(
        client, "gdp-diff", {"values": values, "horizon": 5, "intervals": [0.8, 0.95]}
    )
    f = np.array(answer["forecast"])
    (i80, i95) = answer["intervals"]
    assert (i80["level"], i95["level"]) == (0.8, 0.95)
    for a, b in ((i95["lower"], i80["lower"]), (i80["lower"], f), (f, i80["upper"])):
        assert np.all(np.array(a) <= np.array(b))
    assert np.all(np.array(i80["upper"]) <= np.array(i95["upper"]))
    # Wider further ahead: the errors grow with the horizon.
    width = np.array(i95["upper"]) - np.array(i95["lower"])
    assert width[-1] > width[0]


@pytest.mark.parametrize(
    ("levels", "field"),
    [
        ([0.0], "series[0].intervals[0]"),
        ([1.0], "series[0].intervals[0]"),
        ([0.5, 1.2], "series[0].intervals[1]"),
    ],
)
def test_an_interval_level_outside_0_1_is_refused(
    client: TestClient, levels: list[float], field: str
) -> None:
    r = client.post(
        "/v1/models/gdp-diff/predict",
        json={"series": [{"values": [2710.3, 2778.8], "intervals": levels}]},
    )
    assert r.status_code == 422
    assert r.json()["error"]["field"] == field


def test_intervals_beyond_the_calibrated_steps_are_refused(client: TestClient) -> None:
    r = client.post(
        "/v1/models/gdp-diff/predict",
        json={"series": [{"values": [2710.3, 2778.8], "horizon": 40, "intervals": [0.8]}]},
    )
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["field"] == "series[0].intervals"
    assert "for at most 12 step(s); horizon is 40" in error["message"]


def test_session_steps_and_frames_answer_intervals(client: TestClient) -> None:
    session = client.post("/v1/models/gdp-diff/sessions", json={}).json()["session"]
    r = client.post(
        f"/v1/sessions/{session}/observe",
        json={"values": [2710.3, 2778.8, 2775.5], "offset": 0, "horizon": 2, "intervals": [0.9]},
    )
    assert r.status_code == 200, r.text
    (interval,) = r.json()["intervals"]
    assert len(interval["lower"]) == 2
    bad = client.post(
        f"/v1/sessions/{session}/observe",
        json={"values": [2785.2], "offset": 3, "intervals": [1.5]},
    )
    assert bad.status_code == 422
    with client.websocket_connect(f"/v1/models/gdp-diff/stream?session={session}") as ws:
        json.loads(ws.receive_text())
        ws.send_text(json.dumps({"values": [2785.2], "horizon": 3, "intervals": [0.5, 0.9]}))
        answer = json.loads(ws.receive_text())
    assert answer["start"] == 3  # the refused step did not apply
    assert [i["level"] for i in answer["intervals"]] == [0.5, 0.9]


def test_the_python_client_carries_levels_and_asks_for_intervals(
    trained_models: tuple[Path, dict[str, Trained]],
) -> None:
    from service.client import Client
    from tests.service.sessions_support import live_server

    values = [2710.3, 2778.8, 2775.5, 2785.2, 2847.7, 2834.4]
    with (
        live_server(Settings(model_dir=trained_models[0])) as address,
        Client(f"http://{address}") as seqcast,
    ):
        whole = seqcast.predict("gdp-diff", values, horizon=3)
        first = seqcast.predict("gdp-diff", values[:4])
        assert first.state is not None
        rest = seqcast.predict(
            "gdp-diff", values[4:], state=first.state, horizon=3, intervals=[0.8]
        )
        np.testing.assert_allclose(rest.forecast, whole.forecast, rtol=1e-6)
        assert rest.intervals is not None
        assert rest.intervals[0]["level"] == 0.8
        with seqcast.create_session("gdp-diff") as session:
            step = session.observe(values, horizon=3, intervals=[0.95])
        np.testing.assert_allclose(step.forecast, whole.forecast, rtol=1e-6)
        assert step.intervals is not None
        assert len(step.intervals[0]["upper"]) == 3


def test_the_open_inference_protocol_refuses_a_differenced_model_naming_v1(
    client: TestClient,
) -> None:
    """/v2 tensors have no place for the levels such a model's state carries: a clear
    400 in the protocol's error form, never a 500."""
    body = {
        "inputs": [{"name": "values", "datatype": "FP32", "shape": [3], "data": [1.0, 2.0, 3.0]}]
    }
    r = client.post("/v2/models/gdp-diff/infer", json=body)
    assert r.status_code == 400
    assert "transforms its target" in r.json()["error"]
    assert "use /v1" in r.json()["error"]
    start = {**body, "parameters": {"sequence_id": 7, "sequence_start": True}}
    r = client.post("/v2/models/gdp-diff/infer", json=start)
    assert r.status_code == 400
    assert "use /v1" in r.json()["error"]
