"""Writing a model version: models/<name>/<version>/{model.onnx, manifest.json, report/}.

The manifest is built with the schema the service loads with (training/manifest.py) and
checked against the directory and the model bytes before anything is written, so a
training run cannot write a version that the service would refuse.

A version directory appears complete or not at all: it is assembled in a hidden temporary
directory beside it and renamed into place. Versions auto-increment and an existing one is
never overwritten: if the number is taken by the time of the rename, the next one is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from training.manifest import Manifest, check_name
from training.onnx_export import OPSET, io_shapes
from training.pipeline import Trained
from training.ranges import input_range

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
_ATTEMPTS = 100


def existing_versions(repo: Path, name: str) -> list[int]:
    base = repo / name
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.name[0] != "0")


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for pkg in ("torch", "onnx", "onnxruntime", "numpy"):
        try:
            found[pkg] = version(pkg)
        except PackageNotFoundError:
            found[pkg] = "absent"
    return found


def build_manifest(
    trained: Trained, name: str, version_: int, onnx_bytes: bytes, parity: dict[str, Any]
) -> Manifest:
    """Everything the service needs, and everything needed to reproduce the model.

    Raises pydantic's ValidationError (a ValueError) if the result breaks the schema.
    """
    s, cfg, h = trained.series, trained.config, trained.history
    dataset: dict[str, Any] = {"name": s.name, "sha256": s.sha256, "rows": s.rows}
    if s.noise_seed is not None:
        dataset["noise_seed"] = s.noise_seed
    if s.filled is not None:
        dataset["filled"] = s.filled
    split: dict[str, Any] = {
        "train": trained.split.train_end,
        "validation": trained.split.n_val,
        "test": trained.split.n_test,
    }
    if s.times is not None:
        split["time_column"] = s.time_name
        split["test_starts_at"] = s.times[trained.split.val_end]
    refit = trained.refit
    return Manifest.model_validate(
        {
            "format_version": FORMAT_VERSION,
            "name": name,
            "version": version_,
            "architecture": trained.model.architecture(),
            "features": list(s.feature_names),
            "targets": list(s.target_names),
            "scalers": {n: sc.to_dict() for n, sc in trained.scalers.items()},
            "window": cfg.window,
            "onnx": {
                "file": MODEL_FILE,
                "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
                "opset": OPSET,
                **io_shapes(trained.model),
                "parity": parity,
            },
            "training": {
                "dataset": dataset,
                "split": split,
                "config": cfg.to_dict(),
                "seed": cfg.seed,
                "epochs": h.epochs_run,
                "best_epoch": h.best_epoch,
                "fit_seconds": round(h.seconds, 2),
                # The final model's run on training + validation (null: the fit above is it).
                "refit": None
                if refit is None
                else {
                    "rows": trained.fitted_rows,
                    "epochs": refit.epochs_run,
                    "seconds": round(refit.seconds, 2),
                },
                "search": trained.search,  # how the model was chosen (null: not searched)
                "versions": library_versions(),
                "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "metrics": trained.evaluation.summary(),
            "transform": trained.transform.model_dump(),
            "intervals": trained.intervals,
            "time": None if s.time is None else s.time.model_dump(),
            "input_range": input_range(s, trained.fitted_rows, cfg.range_k),
        }
    )


def write_version(
    repo: Path,
    name: str,
    onnx_bytes: bytes,
    manifest_for: Callable[[int], Manifest],
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write the next version of `name` atomically; returns its directory.

    `manifest_for(version)` builds the manifest once the number is known; `extra(dir)` may add
    files (the report) to the version directory before it becomes visible. A bad name, or a
    manifest that disagrees with its directory or the model bytes, is refused (ValueError)
    before anything is written.
    """
    check_name(name)
    number = _next_version(repo, name)
    text = _manifest_text(manifest_for(number), name, number, onnx_bytes)
    base = repo / name
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=base))
    try:
        (tmp / MODEL_FILE).write_bytes(onnx_bytes)
        if extra is not None:
            extra(tmp)
        for _ in range(_ATTEMPTS):
            target = base / str(number)
            if not target.exists():
                (tmp / MANIFEST_FILE).write_text(text)
                try:
                    os.rename(tmp, target)  # atomic; fails if target appeared and is not empty
                except OSError:
                    if not target.exists():
                        raise
                else:
                    os.chmod(target, 0o755)  # mkdtemp creates it 0700
                    log.info("wrote %s", target)
                    return target
            # Another writer took the number meanwhile: the manifest must name the next one.
            number = _next_version(repo, name)
            text = _manifest_text(manifest_for(number), name, number, onnx_bytes)
        raise RuntimeError(f"could not claim a version of {name} under {repo}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _next_version(repo: Path, name: str) -> int:
    return max(existing_versions(repo, name), default=0) + 1


def _manifest_text(manifest: Manifest, name: str, number: int, onnx_bytes: bytes) -> str:
    """manifest.json for `<name>/<number>/`, once it agrees with everything the service checks.

    The schema has validated the manifest itself; what it cannot see is where the manifest
    lands and which bytes lie beside it, and the service refuses a mismatch in either.
    """
    if (manifest.name, manifest.version) != (name, number):
        raise ValueError(
            f"manifest says {manifest.name}/{manifest.version} but would be written "
            f"to {name}/{number}"
        )
    if manifest.onnx.file != MODEL_FILE:
        raise ValueError(f"manifest onnx.file is {manifest.onnx.file!r}, not {MODEL_FILE!r}")
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    if manifest.onnx.sha256 != digest:
        raise ValueError(
            f"manifest onnx.sha256 is {manifest.onnx.sha256}, the model bytes hash to {digest}"
        )
    # mode="json" gives strict JSON (a NaN metric becomes null). exclude_none stays off: an
    # optional field written as null reads back as None all the same, and no key of the
    # training or metrics blocks silently disappears.
    return json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n"
