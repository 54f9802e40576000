"""Re-score a saved model version with its ONNX file, as the service runs it.

On a CSV: the test part of any series with the model's columns, in original units. On the
synthetic series: fresh noise, where a model that learned the process and not the training
noise scores the same ratio to the noiseless floor as on its own realization.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from training import transforms
from training.config import TrainConfig, legacy_config
from training.data import SINE_NAME, DataError, Series, Split, split_series, synthetic_sine
from training.evaluate import Runner, evaluate
from training.manifest import Manifest
from training.scalers import Scaler, scaler_from_dict

MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Saved:
    """A model version read back: its checked manifest and the path of its ONNX file."""

    directory: Path
    manifest: Manifest
    model_file: Path

    @property
    def dataset(self) -> str:
        return str(self.manifest.training.get("dataset", {}).get("name", "unknown data"))

    @property
    def synthetic(self) -> bool:
        return self.dataset == SINE_NAME

    def config(self) -> TrainConfig:
        return legacy_config(self.manifest.training["config"])

    def scalers(self) -> dict[str, Scaler]:
        return {n: scaler_from_dict(s.model_dump()) for n, s in self.manifest.scalers.items()}

    def runner(self) -> Runner:
        """A Runner over the ONNX model from a zero state (CPU execution provider)."""
        session = ort.InferenceSession(str(self.model_file), providers=["CPUExecutionProvider"])
        arch = self.manifest.architecture
        names = [t.name for t in self.manifest.onnx.inputs]

        def run(x: np.ndarray) -> np.ndarray:
            state = np.zeros((arch.num_layers, x.shape[0], arch.hidden_size), np.float32)
            feeds = {"x": x.astype(np.float32), **{n: state for n in names if n != "x"}}
            y: np.ndarray = session.run(["y"], feeds)[0]
            return y

        return run


def load_saved(version_dir: Path) -> Saved:
    """Read and check a version directory; a problem raises DataError with one line."""
    path = version_dir / MANIFEST_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        manifest = Manifest.model_validate_json(text)
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"{path} is not a valid manifest: {first}") from exc
    model_file = version_dir / manifest.onnx.file
    try:
        digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    except OSError as exc:
        raise DataError(f"cannot read {model_file}: {exc.strerror or exc}") from exc
    if digest != manifest.onnx.sha256:
        raise DataError(f"{model_file} does not match the sha256 in its manifest")
    return Saved(version_dir, manifest, model_file)


def rescore(saved: Saved, series: Series, test_rows: int | None = None) -> dict[str, Any]:
    """Metrics (original units) of the saved model on the last rows of `series`.

    The test part is `test_rows` long, or as the model's own split would cut this series.
    Streaming runs from the first row, so its figures match the manifest's on the same data.
    """
    cfg, window = saved.config(), saved.manifest.window
    if test_rows is None:
        test_rows = split_series(
            series.rows, cfg.val_fraction, cfg.test_fraction, cfg.test_rows, cfg.val_rows
        ).n_test
    start = series.rows - test_rows
    if test_rows < 1 or start < max(1, window):
        raise DataError(
            f"{series.name} has {series.rows} rows: a test part of {test_rows} leaves "
            f"{start} before it, and the windowed evaluation needs {window} (at most "
            f"{series.rows - window} test rows)"
        )
    t = saved.manifest.transform
    if t is not None and (t.lag > 0 or t.log is not None):
        # In model units (transformed, `lag` rows fewer), scored in levels.
        transforms.check(t, series)
        if start - t.lag < max(1, window):
            raise DataError(
                f"{series.name}: a test part of {test_rows} leaves {start - t.lag} differenced "
                f"rows before it, and the windowed evaluation needs {window}"
            )
        mseries = transforms.apply(t, series)
        msplit = Split(start - t.lag, start - t.lag, series.rows - t.lag)
        ev = evaluate(saved.runner(), mseries, msplit, saved.scalers(), window, None, t, series)
    else:
        split = Split(train_end=start, val_end=start, rows=series.rows)
        ev = evaluate(saved.runner(), series, split, saved.scalers(), window)
    rows: dict[str, Any] = {
        "count": test_rows,
        "first_line": start + 2,
        "last_line": series.rows + 1,
    }
    if series.times is not None:
        rows.update(first_time=series.times[start], last_time=series.times[-1])
    out: dict[str, Any] = {
        "model": str(saved.directory),
        "data": series.name,
        "test_rows": rows,
        "test": ev.metrics,
        "ratios": ev.ratios(),
    }
    recorded = saved.manifest.training.get("split", {}).get("test")
    if saved.manifest.training.get("dataset", {}).get("sha256") == series.sha256 and (
        recorded == test_rows
    ):
        out["manifest_test"] = saved.manifest.metrics.get("test")  # the same rows: comparable
    return out


def evaluate_saved(version_dir: Path, noise_seed: int) -> dict[str, Any]:
    """Metrics and ratios of a saved version on the synthetic series drawn with `noise_seed`."""
    saved = load_saved(version_dir)
    if not saved.synthetic:
        raise DataError(f"{version_dir} was trained on {saved.dataset!r}, not the synthetic series")
    cfg = saved.config()
    series = synthetic_sine(noise_seed)
    split = split_series(
        series.rows, cfg.val_fraction, cfg.test_fraction, cfg.test_rows, cfg.val_rows
    )
    ev = evaluate(saved.runner(), series, split, saved.scalers(), saved.manifest.window)
    ratios = ev.ratios()
    recorded = float(saved.manifest.metrics["ratios"]["streaming_vs_noiseless"])
    return {
        "model": str(version_dir),
        "noise_seed": noise_seed,
        "test": ev.metrics,
        "ratios": ratios,
        "manifest_ratio": recorded,
        "difference": ratios["streaming_vs_noiseless"] - recorded,
    }
