"""The inference core on its own: numpy in, numpy out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.inference import InferenceCore, SeriesInput
from service.inputs import InputError, Limits, check_horizon, values_array
from service.repository import LoadedModel, load_version
from service.settings import Settings
from tests.modelkit import write_model
from tests.service.oracle import Oracle

LIMITS = Limits(max_series=8, max_values=100, max_horizon=10)


def load_model(version_dir: Path) -> LoadedModel:
    return load_version(version_dir, ["CPUExecutionProvider"], ort.SessionOptions())


def load(version_dir: Path) -> InferenceCore:
    return InferenceCore(load_model(version_dir))


def test_batch_of_mixed_lengths_in_input_order(model_dir: Path) -> None:
    forecaster = load(model_dir / "tiny-gru" / "1")
    ref = Oracle(model_dir / "tiny-gru" / "1")
    rng = np.random.default_rng(1)
    inputs = [
        SeriesInput(values=rng.normal(size=(n, 1)).astype(np.float32), horizon=h)
        for n, h in [(5, 1), (2, 3), (5, 2), (1, 1)]
    ]
    outputs = forecaster.predict(inputs)
    assert len(outputs) == 4
    for given, out in zip(inputs, outputs, strict=True):
        preds, h, _ = ref.run(given.values)
        assert out.predictions.shape == (given.values.shape[0], 1)
        assert out.forecast.shape == (given.horizon, 1)
        assert out.h.shape == (2, 5)
        assert out.c is None
        np.testing.assert_allclose(out.predictions, preds, atol=1e-5)
        np.testing.assert_allclose(out.h, h, atol=1e-5)


def test_horizon_needs_targets_equal_to_features(model_dir: Path) -> None:
    model = load_model(model_dir / "two-in-one-out" / "1")
    check_horizon(1, model, LIMITS, "horizon")
    with pytest.raises(InputError, match="must be 1") as caught:
        check_horizon(2, model, LIMITS, "series[1].horizon")
    assert caught.value.field == "series[1].horizon"


@pytest.fixture(scope="module")
def narrow_scaler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose scaler multiplies by 1000: large float32 values overflow once scaled."""
    root = tmp_path_factory.mktemp("narrow")
    version_dir = write_model(root, "narrow", "rnn", hidden=3)
    path = version_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["scalers"]["value"] = {"kind": "standard", "mean": 0.0, "std": 1e-3}
    path.write_text(json.dumps(manifest))
    return root


def test_value_overflowing_once_scaled_is_refused(narrow_scaler: Path) -> None:
    model = load_model(narrow_scaler / "narrow" / "1")
    assert not model.scale_is_safe
    values_array([1.0, 3e35], model, LIMITS, "values")
    with pytest.raises(InputError, match="overflows float32") as caught:
        values_array([1.0, 1e37, 2.0], model, LIMITS, "series[1].values")
    assert caught.value.field == "series[1].values[1]"
    # Scaled in float64 then narrowed: still the manifest's affine map.
    out = InferenceCore(model).predict([SeriesInput(values=np.array([[0.002]], np.float32))])
    ref, _, _ = Oracle(narrow_scaler / "narrow" / "1").run(np.array([[0.002]]))
    np.testing.assert_allclose(out[0].predictions, ref, atol=1e-5)


def test_overflow_once_scaled_names_the_value(narrow_scaler: Path) -> None:
    settings = Settings(model_dir=narrow_scaler)
    with TestClient(create_app(settings)) as c:
        response = c.post("/v1/models/narrow/predict", json={"series": [{"values": [1, 1e37]}]})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "series[0].values[1]"
    assert "overflows float32" in error["message"]
