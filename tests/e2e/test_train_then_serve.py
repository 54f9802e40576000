"""Both halves through their contract: a model trained and written by training/ is served by
service/ with the predictions, forecasts and state that the PyTorch model gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from service.app import create_app
from service.cli import main as seqcast_main
from service.settings import Settings
from training.config import TrainConfig
from training.data import load_csv
from training.onnx_export import export_onnx
from training.pipeline import train
from training.scalers import apply, invert, scaler_from_dict


def write_csv(path: Path, rows: int = 160) -> None:
    """Two columns with different scales, so a scaler mix-up shows in the values."""
    rng = np.random.default_rng(3)
    t = np.arange(rows) * 0.2
    a = 10.0 + 3.0 * np.sin(t) + rng.normal(0, 0.3, rows)
    b = -50.0 + 20.0 * np.cos(0.5 * t) + rng.normal(0, 2.0, rows)
    lines = ["a,b", *(f"{x:.6f},{y:.6f}" for x, y in zip(a, b, strict=True))]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def trained_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    write_csv(root / "data.csv")
    argv = [
        "train", "--csv", str(root / "data.csv"), "--features", "a", "b", "--cell", "lstm",
        "--hidden-size", "6", "--num-layers", "2", "--window", "24", "--burn-in", "4",
        "--epochs", "2", "--out", str(root / "models"), "--name", "e2e-lstm", "--no-progress",
        "--search-budget", "0",  # one model, so that its config retrains it
    ]  # fmt: skip
    assert seqcast_main(argv) == 0  # `seqcast train`, found by entry point
    return root


def test_the_written_model_is_served_as_pytorch_computes_it(trained_repo: Path) -> None:
    version_dir = trained_repo / "models" / "e2e-lstm" / "1"
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert (manifest["features"], manifest["targets"]) == (["a", "b"], ["a", "b"])

    # The PyTorch side: retrain from the manifest's own config (training is seeded), check it
    # is the very model that was written, then compute the answer in original units.
    config = TrainConfig(**manifest["training"]["config"])
    series = load_csv(trained_repo / "data.csv", ["a", "b"], ["a", "b"])
    assert series.sha256 == manifest["training"]["dataset"]["sha256"]
    model = train(series, config).model
    assert export_onnx(model) == (version_dir / "model.onnx").read_bytes()
    scalers = {k: scaler_from_dict(v) for k, v in manifest["scalers"].items()}
    names = ("a", "b")
    values = series.features[:30]  # (T, 2) original units
    x = torch.from_numpy(apply(scalers, names, values).astype(np.float32))[None]  # (1, T, 2)
    with torch.no_grad():
        y, (h, c) = model(x)
        # Horizon 3: feed each prediction back, from the state after the observed values.
        step, state, rolled = y[:, -1:], (h, c), []
        for _ in range(2):
            step, state = model(step, state)
            rolled.append(step[0, 0].numpy())
    want_preds = invert(scalers, names, y[0].numpy())
    want_forecast = invert(scalers, names, np.stack([y[0, -1].numpy(), *rolled]))

    settings = Settings(model_dir=trained_repo / "models")
    with TestClient(create_app(settings)) as client:
        meta = client.get("/v1/models/e2e-lstm").json()
        response = client.post(
            "/v1/models/e2e-lstm/predict",
            json={
                "series": [{"values": values.tolist(), "horizon": 3}],
                "return_predictions": True,
            },
        )
    assert meta["versions"] == [1]
    assert meta["latest"]["features"] == ["a", "b"]
    assert meta["latest"]["state_shape"] == {"h": [2, 6], "c": [2, 6]}
    assert meta["latest"]["metrics"] == manifest["metrics"]
    assert response.status_code == 200, response.text
    got = response.json()["series"][0]
    np.testing.assert_allclose(np.array(got["predictions"]), want_preds, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.array(got["forecast"]), want_forecast, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.array(got["state"]["h"]), h[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.array(got["state"]["c"]), c[:, 0].numpy(), atol=1e-5)
