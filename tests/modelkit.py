"""Tiny RNN/LSTM/GRU models exported to ONNX in a model repository, for tests.

`write_model(root, "tiny-lstm", "lstm")` writes `root/tiny-lstm/1/{model.onnx,manifest.json}`
following docs/model-repository.md, so any test package can serve a real model.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class TinyForecaster(nn.Module):
    """Recurrent layer + linear head, with the graph I/O of the contract."""

    def __init__(self, cell: str, input_size: int, hidden: int, layers: int, output: int) -> None:
        super().__init__()
        self.lstm = cell == "lstm"
        self.rnn = CELLS[cell](input_size, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, output)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, *c0: torch.Tensor) -> Any:
        if self.lstm:
            out, (h_n, c_n) = self.rnn(x, (h0, c0[0]))
            return self.head(out), h_n, c_n
        out, h_n = self.rnn(x, h0)
        return self.head(out), h_n


def export_onnx(module: TinyForecaster, input_size: int, hidden: int, layers: int) -> bytes:
    lstm = module.lstm
    inputs = ["x", "h0", "c0"] if lstm else ["x", "h0"]
    outputs = ["y", "h_n", "c_n"] if lstm else ["y", "h_n"]
    args = [torch.zeros(2, 3, input_size), torch.zeros(layers, 2, hidden)]
    if lstm:
        args.append(torch.zeros(layers, 2, hidden))
    axes: dict[str, dict[int, str]] = {"x": {0: "batch", 1: "time"}, "y": {0: "batch", 1: "time"}}
    for name in inputs[1:] + outputs[1:]:
        axes[name] = {1: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch 2.13 deprecates the TorchScript exporter, the one that keeps nn.RNN's
        # batch and time dynamic (see DESIGN.md); the warning is expected here.
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        # nn.RNN's own input checks turn tensors into Python booleans while tracing; the
        # exported graph is still dynamic, which the parity tests in tests/service check.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings(
            "ignore", "Exporting a model to ONNX with a batch_size", UserWarning
        )
        torch.onnx.export(
            module,
            tuple(args),
            buffer,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def write_model(
    root: Path,
    name: str,
    cell: str,
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
    module = TinyForecaster(cell, len(features), hidden, layers, len(targets)).eval()
    model_bytes = export_onnx(module, len(features), hidden, layers)
    directory = root / name / str(version)
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(model_bytes)
    manifest = manifest_for(
        name, version, cell, features, targets, hidden, layers, hashlib.sha256(model_bytes)
    )
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory


def manifest_for(
    name: str,
    version: int,
    cell: str,
    features: list[str],
    targets: list[str],
    hidden: int,
    layers: int,
    digest: Any,
) -> dict[str, Any]:
    state = [layers, "batch", hidden]
    inputs = [
        {"name": "x", "shape": ["batch", "time", len(features)]},
        {"name": "h0", "shape": state},
    ]
    outputs = [
        {"name": "y", "shape": ["batch", "time", len(targets)]},
        {"name": "h_n", "shape": state},
    ]
    if cell == "lstm":
        inputs.append({"name": "c0", "shape": state})
        outputs.append({"name": "c_n", "shape": state})
    # Distinct scalers per column so scaling bugs show up in the values.
    scalers: dict[str, Any] = {}
    for i, column in enumerate(dict.fromkeys(features + targets)):
        if i % 2 == 0:
            scalers[column] = {"kind": "minmax", "min": -2.0 - i, "max": 3.0 + i}
        else:
            scalers[column] = {"kind": "standard", "mean": 0.5 * i, "std": 1.5 + i}
    return {
        "format_version": 1,
        "name": name,
        "version": version,
        "architecture": {
            "cell": cell,
            "input_size": len(features),
            "hidden_size": hidden,
            "num_layers": layers,
            "output_size": len(targets),
            "dropout": 0.0,
        },
        "features": features,
        "targets": targets,
        "scalers": scalers,
        "window": 20,
        "onnx": {
            "file": "model.onnx",
            "sha256": digest.hexdigest(),
            "opset": 17,
            "inputs": inputs,
            "outputs": outputs,
            "parity": {"max_abs_error": 0.0, "tolerance": 1e-5},
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
