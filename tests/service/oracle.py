"""Direct onnxruntime computations to check the service's answers against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort


class Oracle:
    """Runs a model version straight through onnxruntime, scaling by its manifest."""

    def __init__(self, version_dir: Path) -> None:
        self.manifest: dict[str, Any] = json.loads((version_dir / "manifest.json").read_text())
        self.session = ort.InferenceSession(
            str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        arch = self.manifest["architecture"]
        self.lstm = arch["cell"] == "lstm"
        self.layers, self.hidden = arch["num_layers"], arch["hidden_size"]

    def _affine(self, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
        offsets, scales = [], []
        for column in columns:
            s = self.manifest["scalers"][column]
            if s["kind"] == "minmax":
                offsets.append(s["min"])
                scales.append(s["max"] - s["min"])
            else:
                offsets.append(s["mean"])
                scales.append(s["std"])
        return np.array(offsets, np.float32), np.array(scales, np.float32)

    def run(
        self, values: np.ndarray, h: np.ndarray | None = None, c: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """values (T, F) original units -> predictions (T, O) original units, h_n, c_n."""
        x_off, x_scale = self._affine(self.manifest["features"])
        y_off, y_scale = self._affine(self.manifest["targets"])
        x = ((values.astype(np.float32) - x_off) / x_scale)[None].astype(np.float32)
        zeros = np.zeros((self.layers, self.hidden), np.float32)
        feeds = {"x": x, "h0": (zeros if h is None else h)[:, None, :].astype(np.float32)}
        if self.lstm:
            feeds["c0"] = (zeros if c is None else c)[:, None, :].astype(np.float32)
        out = self.session.run(None, feeds)
        preds = out[0][0] * y_scale + y_off
        return preds, out[1][:, 0, :], out[2][:, 0, :] if self.lstm else None
