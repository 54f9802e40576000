"""Writing a model version: models/<name>/<version>/{model.onnx, manifest.json, report/}.

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

from training.manifest import check_name
from training.onnx_export import OPSET, io_shapes
from training.pipeline import Trained

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
) -> dict[str, Any]:
    """Everything the service needs, and everything needed to reproduce the model."""
    s, cfg, h = trained.series, trained.config, trained.history
    dataset: dict[str, Any] = {"name": s.name, "sha256": s.sha256, "rows": s.rows}
    if s.noise_seed is not None:
        dataset["noise_seed"] = s.noise_seed
    return {
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
            "split": {
                "train": trained.split.train_end,
                "validation": trained.split.val_end - trained.split.train_end,
                "test": trained.split.n_test,
            },
            "config": cfg.to_dict(),
            "seed": cfg.seed,
            "epochs": h.epochs_run,
            "best_epoch": h.best_epoch,
            "fit_seconds": round(h.seconds, 2),
            "versions": library_versions(),
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "metrics": trained.evaluation.summary(),
    }


def write_version(
    repo: Path,
    name: str,
    onnx_bytes: bytes,
    manifest_for: Callable[[int], dict[str, Any]],
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write the next version of `name` atomically; returns its directory.

    `manifest_for(version)` builds the manifest once the number is known; `extra(dir)` may add
    files (the report) to the version directory before it becomes visible.
    """
    check_name(name)
    base = repo / name
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=base))
    try:
        (tmp / MODEL_FILE).write_bytes(onnx_bytes)
        if extra is not None:
            extra(tmp)
        for _ in range(_ATTEMPTS):
            number = max(existing_versions(repo, name), default=0) + 1
            target = base / str(number)
            text = json.dumps(manifest_for(number), indent=2) + "\n"
            (tmp / MANIFEST_FILE).write_text(text)
            if target.exists():
                continue
            try:
                os.rename(tmp, target)  # atomic; fails if target appeared and is not empty
            except OSError:
                if target.exists():
                    continue
                raise
            os.chmod(target, 0o755)  # mkdtemp creates it 0700
            log.info("wrote %s", target)
            return target
        raise RuntimeError(f"could not claim a version of {name} under {repo}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
