"""Evaluate a saved model version (its ONNX file, as the service runs it) on fresh noise.

A model that learned the process and not the training noise scores the same ratio to the
noiseless floor on another realization of the synthetic series.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from training.data import split_series, synthetic_sine
from training.evaluate import Runner, evaluate
from training.scalers import scaler_from_dict


def onnx_runner(model_file: Path, manifest: dict[str, Any]) -> Runner:
    """A Runner over an ONNX model from a zero state (CPU execution provider)."""
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    arch = manifest["architecture"]
    names = [o["name"] for o in manifest["onnx"]["inputs"]]

    def run(x: np.ndarray) -> np.ndarray:
        state = np.zeros((arch["num_layers"], x.shape[0], arch["hidden_size"]), np.float32)
        feeds = {"x": x.astype(np.float32), **{n: state for n in names if n != "x"}}
        y: np.ndarray = session.run(["y"], feeds)[0]
        return y

    return run


def evaluate_saved(version_dir: Path, noise_seed: int) -> dict[str, Any]:
    """Metrics and ratios of a saved version on the synthetic series drawn with `noise_seed`."""
    manifest = json.loads((version_dir / "manifest.json").read_text())
    model_file = version_dir / manifest["onnx"]["file"]
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    if digest != manifest["onnx"]["sha256"]:
        raise ValueError(f"{model_file} does not match the sha256 in its manifest")
    cfg = manifest["training"]["config"]
    series = synthetic_sine(noise_seed)
    split = split_series(series.rows, cfg["val_fraction"], cfg["test_fraction"])
    scalers = {n: scaler_from_dict(d) for n, d in manifest["scalers"].items()}
    ev = evaluate(onnx_runner(model_file, manifest), series, split, scalers, manifest["window"])
    ratios = ev.ratios()
    recorded = float(manifest["metrics"]["ratios"]["streaming_vs_noiseless"])
    return {
        "model": str(version_dir),
        "noise_seed": noise_seed,
        "test": ev.metrics,
        "ratios": ratios,
        "manifest_ratio": recorded,
        "difference": ratios["streaming_vs_noiseless"] - recorded,
    }
