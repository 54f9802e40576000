"""Tiny RNN/LSTM/GRU models exported to ONNX in a model repository, for tests.

`write_model(root, "tiny-lstm", "lstm")` writes `root/tiny-lstm/1/{model.onnx,manifest.json}`
with training's own model, exporter and manifest schema, so any test package can serve a
real model that is exactly what a training run would write.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from training.config import Cell
from training.manifest import Manifest
from training.models import Forecaster
from training.onnx_export import OPSET, TOLERANCE, export_onnx, io_shapes


def write_model(
    root: Path,
    name: str,
    cell: Cell,
    *,
    version: int = 1,
    hidden: int = 8,
    layers: int = 1,
    features: list[str] | None = None,
    targets: list[str] | None = None,
    seed: int = 0,
) -> Path:
    """Export a randomly initialised tiny model and its manifest; returns the version dir."""
    features = features or ["value"]
    targets = targets or list(features)
    torch.manual_seed(seed)
    model = Forecaster(cell, len(features), hidden, layers, output_size=len(targets))
    model_bytes = export_onnx(model)
    manifest = manifest_for(name, version, model, features, targets, model_bytes)
    directory = root / name / str(version)
    directory.mkdir(parents=True)
    (directory / manifest.onnx.file).write_bytes(model_bytes)
    (directory / "manifest.json").write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
    return directory


def manifest_for(
    name: str,
    version: int,
    model: Forecaster,
    features: list[str],
    targets: list[str],
    model_bytes: bytes,
) -> Manifest:
    """A valid manifest for `model`, with made-up training provenance and metrics."""
    # Distinct scalers per column so scaling bugs show up in the values.
    scalers: dict[str, Any] = {}
    for i, column in enumerate(dict.fromkeys(features + targets)):
        if i % 2 == 0:
            scalers[column] = {"kind": "minmax", "min": -2.0 - i, "max": 3.0 + i}
        else:
            scalers[column] = {"kind": "standard", "mean": 0.5 * i, "std": 1.5 + i}
    return Manifest.model_validate(
        {
            "format_version": 1,
            "name": name,
            "version": version,
            "architecture": model.architecture(),
            "features": features,
            "targets": targets,
            "scalers": scalers,
            "window": 20,
            "onnx": {
                "file": "model.onnx",
                "sha256": hashlib.sha256(model_bytes).hexdigest(),
                "opset": OPSET,
                **io_shapes(model),
                "parity": {"max_abs_error": 0.0, "tolerance": TOLERANCE},
            },
            "training": {
                "dataset": {"name": "none", "sha256": "0" * 64, "rows": 0},
                "config": {},
                "seed": 0,
                "epochs": 0,
                "best_epoch": 0,
                "versions": {"torch": torch.__version__},
                "created_at": "2026-11-22T00:00:00Z",
            },
            "metrics": {"test": {"streaming": {"rmse": 1.0, "mae": 1.0, "smape": 1.0}}},
        }
    )
