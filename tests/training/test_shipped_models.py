"""The default models in models/: intact, as good as their manifests say, and reproducible."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from training.config import legacy_config
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


# Retraining on another CPU retraces the shipped run only as far as float rounding allows:
# PyTorch's CPU kernels round differently per instruction set (AVX-512, AVX2, scalar), and
# training is chaotic enough to amplify that. Measured against the shipped runs, on this
# machine natively and with ATEN_CPU_CAPABILITY=default or MKL/oneDNN held to AVX2 (each
# deterministic run to run): the loss of the first 3 epochs agrees to 2e-7 relative for all
# three cells, while another seed already differs by 6e-3 or more in epoch 1. After that
# the RNN's run drifts apart (2e-4 in epoch 6, up to 3e-2 later), early stopping keeps epoch 19
# or 22 instead of 20, and its test metrics move by up to 3.6e-3 relative (sMAPE; 2e-3 MAE,
# 6e-4 RMSE); LSTM and GRU stay within 6e-7. So: the first epochs must match tightly, which
# proves the same data, split, scaling, initialisation and batch order; the final metrics
# within 1 %, about three times the largest drift measured.
RETRACED_EPOCHS = 3
RETRACED_REL = 1e-5
METRICS_REL = 1e-2
BEST_EPOCH_DRIFT = 5  # measured: 19 to 22 for the RNN's 20


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_retraining_reproduces_the_shipped_run(name: str) -> None:
    """Training again from the manifest's config retraces the shipped run and its metrics."""
    m = _manifest(name)
    report = json.loads((MODELS / name / "1" / "report" / "metrics.json").read_text())[name]
    # Their manifests predate refit and lr_epochs: legacy_config restores how they ran.
    config = legacy_config({**m["training"]["config"], "device": "cpu"})
    series = synthetic_sine(m["training"]["dataset"]["noise_seed"])
    assert series.sha256 == m["training"]["dataset"]["sha256"]
    trained = train(series, config)
    h = trained.history
    for kind, got in (("train", h.train_loss), ("val", h.val_loss)):
        want = report["loss"][kind][:RETRACED_EPOCHS]
        assert got[:RETRACED_EPOCHS] == pytest.approx(want, rel=RETRACED_REL), kind
    for way, block in m["metrics"]["test"].items():
        for metric, value in block.items():
            got = trained.evaluation.metrics[way][metric]
            assert got == pytest.approx(value, rel=METRICS_REL), (way, metric)
    assert abs(h.best_epoch - m["training"]["best_epoch"]) <= BEST_EPOCH_DRIFT
