"""The model repository: scan `<model_dir>/<name>/<version>/`, validate, load into ONNX Runtime.

A version that fails any check is skipped with one log line naming its path and the
reason; the others keep serving, and /readyz reports the failure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from training.manifest import NAME_PATTERN, Manifest, TensorSpec, shapes_match

log = logging.getLogger(__name__)

_NAME_RE = re.compile(NAME_PATTERN)
_VERSION_RE = re.compile(r"^[1-9][0-9]{0,8}$")
# Largest finite float32: every number the service accepts lies within it.
F32_MAX = float(np.finfo(np.float32).max)


class ModelLoadError(Exception):
    """One model version cannot be served; the message is the reason."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One servable model version: its manifest, its ONNX Runtime session and scalers."""

    name: str = field(init=False)
    version: int = field(init=False)
    manifest: Manifest
    ort_session: ort.InferenceSession  # shared by every request (safe to run concurrently)
    path: Path
    providers: list[str]
    # Affine scalers as float32 vectors: scaled = (value - offset) / scale.
    x_offset: np.ndarray
    x_scale: np.ndarray
    y_offset: np.ndarray
    y_scale: np.ndarray
    # The input scaler as scaled = value * x_mul + x_add, in float64 and float32.
    x_mul64: np.ndarray
    x_add64: np.ndarray
    x_mul: np.ndarray
    x_add: np.ndarray
    # True when no float32 value can leave float32 range once scaled (every scale above
    # about 1, the common case): scaling then needs neither float64 nor a range check.
    scale_is_safe: bool
    # Values up to this magnitude stay within float32 once scaled, whatever the feature
    # (inf when scale_is_safe): one max() decides for a whole request.
    safe_abs: float

    def __post_init__(self) -> None:
        # Read on every request: plain attributes rather than properties over the manifest.
        object.__setattr__(self, "name", self.manifest.name)
        object.__setattr__(self, "version", self.manifest.version)

    @property
    def state_shape(self) -> tuple[int, int]:
        """(num_layers, hidden) of one series' h (and c)."""
        a = self.manifest.architecture
        return a.num_layers, a.hidden_size


@dataclass(frozen=True)
class LoadFailure:
    model: str  # "<name>/<version>" (or the bad directory name) under the model directory
    reason: str
    path: str  # the full path: for the operator's log only, never answered


@dataclass
class ModelRepository:
    """Every loaded model version by name and version, plus what failed to load."""

    models: dict[str, dict[int, LoadedModel]] = field(default_factory=dict)
    failures: list[LoadFailure] = field(default_factory=list)

    def get(self, name: str, version: int | None = None) -> LoadedModel | None:
        """The given version of a model, or its highest version; None when absent."""
        versions = self.models.get(name)
        if not versions:
            return None
        if version is None:
            return versions[max(versions)]
        return versions.get(version)


def load_repository(
    model_dir: Path, providers: list[str], options: ort.SessionOptions
) -> ModelRepository:
    """Load every valid version under model_dir; record the rest as failures."""
    repo = ModelRepository()
    if not model_dir.is_dir():
        log.warning("model repository %s does not exist or is not a directory", model_dir)
        return repo
    for model_path in sorted(p for p in model_dir.iterdir() if p.is_dir()):
        if model_path.name.startswith("."):
            continue
        if not _NAME_RE.match(model_path.name):
            _fail(repo, model_path, model_path.name, f"directory name must match {NAME_PATTERN}")
            continue
        for version_path in sorted(p for p in model_path.iterdir() if p.is_dir()):
            if version_path.name.startswith("."):
                continue
            try:
                if not _VERSION_RE.match(version_path.name):
                    raise ModelLoadError("version directory must be a positive integer")
                model = load_version(version_path, providers, options)
            except ModelLoadError as exc:
                _fail(repo, version_path, f"{model_path.name}/{version_path.name}", str(exc))
                continue
            repo.models.setdefault(model.name, {})[model.version] = model
            log.info(
                "loaded model %s version %d from %s on %s",
                model.name,
                model.version,
                version_path,
                model.providers,
            )
    return repo


def _fail(repo: ModelRepository, path: Path, model: str, reason: str) -> None:
    log.error("skipping model %s: %s", path, reason)
    repo.failures.append(LoadFailure(model=model, reason=reason, path=str(path)))


def load_version(path: Path, providers: list[str], options: ort.SessionOptions) -> LoadedModel:
    """Validate and load one `<name>/<version>` directory, or raise ModelLoadError."""
    manifest = read_manifest(path)
    model_bytes = _read_model_bytes(path / manifest.onnx.file, manifest.onnx.sha256)
    try:
        session = ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad graph
        raise ModelLoadError(f"onnxruntime cannot load {manifest.onnx.file}: {exc}") from exc
    _check_graph(session, manifest)
    if session.get_providers()[0] != providers[0]:
        log.warning(
            "model %s runs on %s, not on the requested %s",
            path,
            session.get_providers(),
            providers[0],
        )
    model = LoadedModel(
        manifest=manifest,
        ort_session=session,
        path=path,
        providers=list(session.get_providers()),
        **_scaler_vectors(manifest),
    )
    _warm_up(model)
    return model


def read_manifest(path: Path) -> Manifest:
    manifest_path = path / "manifest.json"
    try:
        raw = json.loads(manifest_path.read_bytes())
    except FileNotFoundError as exc:
        raise ModelLoadError("manifest.json is missing") from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"manifest.json is not valid JSON: {exc}") from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise ModelLoadError(f"manifest.json is invalid at {where}: {first['msg']}") from exc
    if manifest.name != path.parent.name:
        raise ModelLoadError(
            f"manifest name {manifest.name!r} disagrees with directory {path.parent.name!r}"
        )
    if str(manifest.version) != path.name:
        raise ModelLoadError(
            f"manifest version {manifest.version} disagrees with directory {path.name!r}"
        )
    return manifest


def _read_model_bytes(file: Path, sha256: str) -> bytes:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {file.name}: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ModelLoadError(f"sha256 of {file.name} is {digest}, the manifest says {sha256}")
    return data


def _check_graph(session: ort.InferenceSession, manifest: Manifest) -> None:
    want_in, want_out = manifest.expected_io()
    for label, nodes, wanted in (
        ("inputs", session.get_inputs(), want_in),
        ("outputs", session.get_outputs(), want_out),
    ):
        got = {n.name: n for n in nodes}
        want: dict[str, TensorSpec] = {t.name: t for t in wanted}
        if set(got) != set(want):
            raise ModelLoadError(
                f"ONNX graph {label} are {sorted(got)}, the contract needs {sorted(want)}"
            )
        for name, spec in want.items():
            node = got[name]
            if node.type != "tensor(float)":
                raise ModelLoadError(f"ONNX graph {name} is {node.type}, expected tensor(float)")
            if not shapes_match(list(node.shape), spec.shape):
                raise ModelLoadError(
                    f"ONNX graph {name} has shape {list(node.shape)}, expected {spec.shape}"
                )


def _scaler_vectors(manifest: Manifest) -> dict[str, Any]:
    def vectors(columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [manifest.scalers[c].affine() for c in columns]
        offset = np.array([p[0] for p in pairs], dtype=np.float32)
        scale = np.array([p[1] for p in pairs], dtype=np.float32)
        return offset, scale

    x_offset, x_scale = vectors(manifest.features)
    y_offset, y_scale = vectors(manifest.targets)
    x_mul64 = 1.0 / x_scale.astype(np.float64)
    x_add64 = -x_offset.astype(np.float64) * x_mul64
    safe = float(np.abs(x_mul64).max()) <= 0.99 and float(np.abs(x_add64).max()) <= 1e-3 * F32_MAX
    return {
        "x_offset": x_offset,
        "x_scale": x_scale,
        "y_offset": y_offset,
        "y_scale": y_scale,
        "x_mul64": x_mul64,
        "x_add64": x_add64,
        "x_mul": x_mul64.astype(np.float32),
        "x_add": x_add64.astype(np.float32),
        "scale_is_safe": safe,
        # Under the exact bound by more than float32's rounding, so that values within
        # it scale in float32 without overflow (and pass no value the exact check refuses).
        "safe_abs": (
            float("inf")
            if safe
            else (F32_MAX - float(np.abs(x_add64).max()))
            / float(np.abs(x_mul64).max())
            * (1 - 1e-6)
        ),
    }


def _warm_up(model: LoadedModel) -> None:
    """One run on zeros so the first request does not pay for lazy initialisation."""
    a = model.manifest.architecture
    feeds = {
        "x": np.zeros((1, 2, a.input_size), dtype=np.float32),
        "h0": np.zeros((a.num_layers, 1, a.hidden_size), dtype=np.float32),
    }
    if model.manifest.is_lstm:
        feeds["c0"] = np.zeros((a.num_layers, 1, a.hidden_size), dtype=np.float32)
    try:
        outputs = model.ort_session.run(None, feeds)
    except Exception as exc:  # a graph that loads but cannot run is as broken as a bad file
        raise ModelLoadError(f"warm-up run failed: {exc}") from exc
    if outputs[0].shape != (1, 2, a.output_size):
        raise ModelLoadError(
            f"warm-up run gave y of shape {outputs[0].shape}, expected {(1, 2, a.output_size)}"
        )
