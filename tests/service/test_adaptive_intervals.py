"""Normalized-conformal intervals: the state carries their running scale, so chunked calls,
client-carried state, sessions and the WebSocket answer the intervals of one call, and the
served scale is the one training calibrated with (training/intervals.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.test_transformed import (  # noqa: F401  (fixtures)
    MODELS,
    _predict,
    _values,
    client,
    trained_models,
)
from training.intervals import DECAY, one_step_errors, running_mean_square
from training.pipeline import Trained

LEVELS = [0.8, 0.95]


def _close_intervals(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [i["level"] for i in got] == [i["level"] for i in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g["lower"], w["lower"], rtol=1e-5)
        np.testing.assert_allclose(g["upper"], w["upper"], rtol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_manifest_records_normalized_conformal_intervals(
    trained_models: tuple[Path, dict[str, Trained]],  # noqa: F811
    name: str,
) -> None:
    block = trained_models[1][name].intervals
    assert block is not None
    assert block["method"] == "normalized-conformal"
    assert block["decay"] == DECAY
    assert len(block["base"]) == 1
    assert block["base"][0] > 0


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("cuts", [[1], [2, 3, 50], [5, 6, 7, 100, 150]])
def test_chunked_intervals_equal_one_call_with_client_state(
    client: TestClient,  # noqa: F811
    trained_models: tuple[Path, dict[str, Trained]],  # noqa: F811
    name: str,
    cuts: list[int],
) -> None:
    values = _values(trained_models[1][name])
    whole = _predict(client, name, {"values": values, "horizon": 5, "intervals": LEVELS})
    state = None
    for chunk in np.split(np.array(values), cuts):
        body: dict[str, Any] = {"values": chunk.tolist(), "horizon": 5, "intervals": LEVELS}
        if state is not None:
            body["state"] = state
        answer = _predict(client, name, body)
        state = answer["state"]
    assert state is not None
    _close_intervals(answer["intervals"], whole["intervals"])
    np.testing.assert_allclose(
        state["scale"]["mean_square"], whole["state"]["scale"]["mean_square"], rtol=1e-5
    )
    np.testing.assert_allclose(state["scale"]["last"], whole["state"]["scale"]["last"], rtol=1e-6)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_served_scale_is_the_one_training_calibrated_with(
    client: TestClient,  # noqa: F811
    trained_models: tuple[Path, dict[str, Trained]],  # noqa: F811
    name: str,
) -> None:
    trained = trained_models[1][name]
    block = trained.intervals
    assert block is not None
    served = _predict(client, name, {"values": _values(trained)})
    t = trained.transform
    identity = t.lag == 0 and t.log is None
    mseries = trained.series if identity else trained.model_series
    levels = None if identity else trained.series
    errors = one_step_errors(trained.model, mseries, trained.scalers, mseries.rows, t, levels)
    m = running_mean_square(errors, np.asarray(block["base"]), block["decay"])
    # ONNX Runtime and torch agree to float32 rounding; squared errors keep that relative.
    np.testing.assert_allclose(served["state"]["scale"]["mean_square"], m[-1], rtol=1e-3)


@pytest.mark.parametrize("name", ["gdp-seasonal", "cpi-log", "gdp-none"])
def test_sessions_and_the_websocket_answer_the_intervals_of_one_call(
    client: TestClient,  # noqa: F811
    trained_models: tuple[Path, dict[str, Trained]],  # noqa: F811
    name: str,
) -> None:
    values = _values(trained_models[1][name])[:60]
    whole = _predict(client, name, {"values": values, "horizon": 3, "intervals": LEVELS})
    session = client.post(f"/v1/models/{name}/sessions", json={}).json()["session"]
    offset = 0
    for chunk in np.split(np.array(values), [1, 3, 4, 30]):
        body = {"values": chunk.tolist(), "offset": offset, "horizon": 3, "intervals": LEVELS}
        r = client.post(f"/v1/sessions/{session}/observe", json=body)
        assert r.status_code == 200, r.text
        offset += len(chunk)
    _close_intervals(r.json()["intervals"], whole["intervals"])
    # A retry of the last step answers the same intervals (from the state it left).
    again = client.post(f"/v1/sessions/{session}/observe", json=body)
    assert again.json()["intervals"] == r.json()["intervals"]
    info = client.get(f"/v1/sessions/{session}?state=true").json()
    np.testing.assert_allclose(
        info["state"]["scale"]["mean_square"], whole["state"]["scale"]["mean_square"], rtol=1e-5
    )
    # The WebSocket, on a session started from the first values' client-carried state.
    first = _predict(client, name, {"values": values[:10]})
    started = client.post(f"/v1/models/{name}/sessions", json={"state": first["state"]})
    assert started.status_code == 201, started.text
    with client.websocket_connect(
        f"/v1/models/{name}/stream?session={started.json()['session']}"
    ) as ws:
        json.loads(ws.receive_text())
        for chunk in np.split(np.array(values[10:]), [1, 5, 20]):
            frame = {"values": chunk.tolist(), "horizon": 3, "intervals": LEVELS}
            ws.send_text(json.dumps(frame))
            answer = json.loads(ws.receive_text())
    _close_intervals(answer["intervals"], whole["intervals"])


def test_a_state_without_a_scale_starts_it_afresh(
    client: TestClient,  # noqa: F811
    trained_models: tuple[Path, dict[str, Trained]],  # noqa: F811
) -> None:
    """A state from before adaptive intervals (h and levels only) is taken: the scale
    starts from the calibration's, as for a fresh stream (docs/api.md)."""
    values = _values(trained_models[1]["gdp-diff"])[:30]
    first = _predict(client, "gdp-diff", {"values": values[:20]})
    old = {k: v for k, v in first["state"].items() if k != "scale"}
    base = trained_models[1]["gdp-diff"].intervals["base"]  # type: ignore[index]
    fresh = {**old, "scale": {"mean_square": base, "last": None}}
    rest = {"values": values[20:], "horizon": 2, "intervals": LEVELS}
    got = _predict(client, "gdp-diff", {**rest, "state": old})
    want = _predict(client, "gdp-diff", {**rest, "state": fresh})
    _close_intervals(got["intervals"], want["intervals"])
    carried = _predict(client, "gdp-diff", {**rest, "state": first["state"]})
    assert carried["intervals"] != got["intervals"]


@pytest.mark.parametrize(
    ("scale", "field"),
    [
        ({"mean_square": [1.0, 2.0]}, "series[0].state.scale.mean_square"),
        ({"mean_square": [1.0], "last": [1.0, 2.0]}, "series[0].state.scale.last"),
        ({"mean_square": [-1.0]}, "series[0].state.scale.mean_square[0]"),
        ({"last": [1.0]}, "series[0].state.scale.mean_square"),
    ],
)
def test_a_bad_scale_is_refused_naming_it(
    client: TestClient,  # noqa: F811
    scale: dict[str, Any],
    field: str,
) -> None:
    state = _predict(client, "gdp-none", {"values": [2710.3, 2778.8]})["state"]
    r = client.post(
        "/v1/models/gdp-none/predict",
        json={"series": [{"values": [2775.5], "state": {**state, "scale": scale}}]},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"].startswith(field)


def test_a_model_with_static_intervals_refuses_a_scale() -> None:
    """The shipped models (older manifests) keep static widths and a state of h alone."""
    with TestClient(create_app(Settings(model_dir=Path("models")))) as c:
        r = c.post("/v1/models/sine-gru/predict", json={"series": [{"values": [0.1, 0.2]}]})
        assert r.status_code == 200
        state = r.json()["series"][0]["state"]
        assert "scale" not in state
        state["scale"] = {"mean_square": [1.0]}
        r = c.post(
            "/v1/models/sine-gru/predict",
            json={"series": [{"values": [0.3], "state": state}]},
        )
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "series[0].state.scale"


def test_the_open_inference_protocol_serves_a_model_with_adaptive_intervals(
    client: TestClient,  # noqa: F811
) -> None:
    # /v2 returns no intervals, so the running scale is not needed: the same predictions
    # and state as /v1 from h and c alone.
    values = [2710.3, 2778.8, 2775.5]
    body = {
        "inputs": [{"name": "values", "datatype": "FP32", "shape": [3], "data": values}],
    }
    r = client.post("/v2/models/gdp-none/infer", json=body)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    v1 = client.post(
        "/v1/models/gdp-none/predict",
        json={"series": [{"values": values}], "return_predictions": True},
    )
    assert v1.status_code == 200, v1.text
    want = v1.json()["series"][0]
    np.testing.assert_allclose(
        np.ravel(outputs["forecast"]["data"]), np.ravel(want["forecast"]), rtol=1e-5
    )
    np.testing.assert_allclose(
        np.ravel(outputs["h"]["data"]), np.ravel(want["state"]["h"]), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("space", ["levels", "log"])
def test_series_updated_together_get_the_scale_each_would_get_alone(space: str) -> None:
    """InferenceCore updates the scale of a batch's series of one length together: the
    same states as one series at a time, fresh or carried, with a missing prediction."""
    from types import SimpleNamespace

    from service.inference import SeriesInput, SeriesOutput
    from service.transforms import ErrorScale

    intervals = SimpleNamespace(decay=0.8, base=[0.02, 0.5], space=space)
    manifest = SimpleNamespace(intervals=intervals, features=["a", "b"], targets=["b", "a"])
    scale = ErrorScale(manifest)  # type: ignore[arg-type]
    rng = np.random.default_rng(3)
    inputs, results = [], []
    for length, carried in [(5, False), (5, True), (3, True), (5, True), (1, False), (3, False)]:
        values = rng.uniform(1.0, 2.0, size=(length, 2)).astype(np.float32)
        predictions = rng.uniform(1.0, 2.0, size=(length, 2))
        predictions[0, 1] = np.nan  # no prediction yet for one target
        state = None
        if carried:
            state = np.array([[0.3, 0.1], [1.5, np.nan]], np.float32)
        inputs.append(SeriesInput(values=values, scale=state))
        results.append(SeriesOutput(predictions, predictions[-1:], np.zeros((1, 4)), None))
    scale.update_all(inputs, results)
    for s, out in zip(inputs, results, strict=True):
        assert out.scale is not None
        want = _scale_step_by_step(scale, s.scale, s.values, out.predictions)
        np.testing.assert_allclose(out.scale, want, rtol=1e-6, equal_nan=True)


def _scale_step_by_step(
    scale: Any, state: np.ndarray | None, values: np.ndarray, predictions: np.ndarray
) -> np.ndarray:
    """The definition, one value at a time: m = d m + (1 - d) e^2 for each value that has
    a prediction made before it, e in the intervals' units."""
    unit = np.log if scale.space == "log" else (lambda y: y)
    prior = scale.fresh() if state is None else state
    m = prior[0].astype(np.float64).copy()
    last = prior[1].astype(np.float64).copy()
    d = scale.decay
    for t in range(values.shape[0]):
        for o, col in enumerate(scale.cols):
            e = unit(float(values[t, col])) - last[o]
            if np.isfinite(e):
                m[o] = d * m[o] + (1.0 - d) * e * e
        last = unit(predictions[t].astype(np.float64))
    return np.stack([m, last]).astype(np.float32)
