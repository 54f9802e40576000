"""The default models in models/: intact, as good as their manifests say, and reproducible."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from training.config import TrainConfig
from training.data import synthetic_sine
from training.generalization import evaluate_saved
from training.pipeline import train

MODELS = Path(__file__).resolve().parents[2] / "models"
# Acceptance: streaming test RMSE at most this multiple of the noiseless-sine RMSE.
TARGETS = {"sine-rnn": 1.06, "sine-lstm": 1.04, "sine-gru": 1.05}


def _manifest(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((MODELS / name / "1" / "manifest.json").read_text())
    return result


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_shipped_model_is_intact_small_and_meets_its_targets(name: str) -> None:
    m = _manifest(name)
    model_file = MODELS / name / "1" / m["onnx"]["file"]
    blob = model_file.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == m["onnx"]["sha256"]
    assert len(blob) < 200_000
    assert (m["name"], m["version"]) == (name, 1)
    assert m["architecture"]["cell"] == name.removeprefix("sine-")
    assert m["onnx"]["parity"]["max_abs_error"] <= 1e-5
    ratios = m["metrics"]["ratios"]
    assert ratios["streaming_vs_noiseless"] <= TARGETS[name]
    assert ratios["streaming_vs_persistence"] <= 0.8
    assert m["training"]["dataset"]["noise_seed"] == 42


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_onnx_reproduces_the_manifest_and_generalizes(name: str) -> None:
    m = _manifest(name)
    same = evaluate_saved(MODELS / name / "1", 42)
    for way, block in m["metrics"]["test"].items():
        for metric, value in block.items():
            got = same["test"][way][metric]
            assert got == pytest.approx(value, rel=1e-6, abs=1e-5), (way, metric)
    fresh = evaluate_saved(MODELS / name / "1", 43)
    assert abs(fresh["difference"]) <= 0.02
    assert fresh["ratios"]["streaming_vs_noiseless"] <= TARGETS[name]
    assert fresh["ratios"]["streaming_vs_persistence"] <= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_retraining_reproduces_the_shipped_metrics(name: str) -> None:
    """Training again from the manifest's config gives the same metrics to 3 decimals."""
    m = _manifest(name)
    config = TrainConfig(**{**m["training"]["config"], "device": "cpu"})
    series = synthetic_sine(m["training"]["dataset"]["noise_seed"])
    assert series.sha256 == m["training"]["dataset"]["sha256"]
    trained = train(series, config)
    for way, block in m["metrics"]["test"].items():
        for metric, value in block.items():
            got = trained.evaluation.metrics[way][metric]
            assert round(got, 3) == round(value, 3), (way, metric, got, value)
    assert trained.history.epochs_run == m["training"]["epochs"]
    assert trained.history.best_epoch == m["training"]["best_epoch"]
