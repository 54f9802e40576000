"""The model repository: scan `<model_dir>/<name>/<version>/`, validate, load into ONNX Runtime.

A version that fails any check is skipped with one log line naming its path and the
reason; the others keep serving, and /readyz reports the failure. A ModelRepository is
one immutable snapshot of what serves; service.reload builds the next one on a re-scan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from service.transforms import ErrorScale
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
    key: tuple[str, int] = field(init=False)  # (name, version), made once
    transformed: bool = field(init=False)
    lag: int = field(init=False)
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
    # (num_layers, hidden) of one series' h (and c), and its size packed as float32.
    state_shape: tuple[int, int] = field(init=False)
    state_bytes: int = field(init=False)
    is_lstm: bool = field(init=False)
    # Normalized-conformal intervals (service.intervals): the running scale the state
    # carries, (2, targets) float32; None for a model with static widths or none.
    error_scale: ErrorScale | None = field(init=False)
    # The state carries more than h and c: levels, a time or an interval scale.
    extra_state: bool = field(init=False)
    # Dated models (service.calendar): the state carries a grid position; calendar inputs
    # are computed, so a client sends `client_inputs` columns of the `input_size`.
    timed: bool = field(init=False)
    client_inputs: int = field(init=False)
    # The manifest carries the training range: inputs far outside it are counted
    # (service.runner); per client input, the edges beyond which a value is far out.
    ranged: bool = field(init=False)
    far_low: np.ndarray = field(init=False)
    far_high: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        # Read on every request: plain attributes rather than properties over the manifest.
        object.__setattr__(self, "name", self.manifest.name)
        object.__setattr__(self, "version", self.manifest.version)
        object.__setattr__(self, "key", (self.manifest.name, self.manifest.version))
        t = self.manifest.transform
        # A target transform other than the identity (service.transforms); `lag`: the
        # observed values a state carries (levels), 0 when none.
        object.__setattr__(self, "transformed", t is not None and (t.lag > 0 or t.log is not None))
        object.__setattr__(self, "lag", self.manifest.lag)
        a = self.manifest.architecture
        object.__setattr__(self, "state_shape", (a.num_layers, a.hidden_size))
        # Bytes of a session's packed h: h, then for a lag the levels (count + lag rows),
        # then for normalized-conformal intervals the scale state (2 rows).
        extra = 1 + self.lag * a.output_size if self.lag else 0
        i = self.manifest.intervals
        scale = ErrorScale(self.manifest) if i is not None and i.decay is not None else None
        object.__setattr__(self, "error_scale", scale)
        extra += 2 * a.output_size if scale is not None else 0
        timed = self.manifest.time is not None
        # A dated model's blob ends with the grid position: 8 bytes (record.pack_h).
        size = (a.num_layers * a.hidden_size + extra) * 4 + (8 if timed else 0)
        object.__setattr__(self, "state_bytes", size)
        object.__setattr__(self, "timed", timed)
        object.__setattr__(self, "client_inputs", len(self.manifest.client_features))
        object.__setattr__(self, "ranged", self.manifest.input_range is not None)
        low = np.full(self.client_inputs, -np.inf)
        high = np.full(self.client_inputs, np.inf)
        r = self.manifest.input_range
        if r is not None:
            for j, name in enumerate(self.manifest.client_features):
                col = r.columns.get(name)
                if col is not None:
                    low[j], high[j] = col.min - r.k * col.std, col.max + r.k * col.std
        object.__setattr__(self, "far_low", low)
        object.__setattr__(self, "far_high", high)
        object.__setattr__(self, "is_lstm", self.manifest.is_lstm)
        object.__setattr__(self, "extra_state", bool(self.lag or timed or scale is not None))


@dataclass(frozen=True)
class LoadFailure:
    model: str  # "<name>/<version>" (or the bad directory name) under the model directory
    reason: str
    path: str  # the full path: for the operator's log only, never answered
    # Found by the load at start-up (and not loaded since): such a failure keeps /readyz
    # at 503; one that a later re-scan finds does not (docs/model-repository.md).
    at_start: bool = False
    # An earlier load of this version still serves (its files changed and no longer load).
    serving: bool = False


@dataclass(frozen=True)
class VersionDir:
    """One `<name>/<version>` directory a scan found, with valid names."""

    name: str
    version: int
    path: Path

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class ModelRepository:
    """Every loaded model version by name and version, plus what failed to load.

    A snapshot: built whole, then only read (a re-scan builds a new one), so a request
    that took it sees one consistent set from start to end.
    """

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


class ModelLookup(Protocol):
    """Finds a served model version: a snapshot, or a Reloader (whichever is current)."""

    def get(self, name: str, version: int | None = None) -> LoadedModel | None: ...


def load_repository(
    model_dir: Path, providers: list[str], options: ort.SessionOptions
) -> ModelRepository:
    """Load every valid version under model_dir; record the rest as failures."""
    repo = ModelRepository()
    found, failures = scan(model_dir)
    for failure in failures:
        _fail(repo, replace(failure, at_start=True))
    for version_dir in found:
        try:
            model = load_version(version_dir.path, providers, options)
        except ModelLoadError as exc:
            _fail(repo, LoadFailure(version_dir.key, str(exc), str(version_dir.path), True))
            continue
        repo.models.setdefault(model.name, {})[model.version] = model
        log_loaded(model)
    return repo


def scan(model_dir: Path) -> tuple[list[VersionDir], list[LoadFailure]]:
    """The version directories under model_dir (sorted), and those misnamed; logs nothing."""
    found: list[VersionDir] = []
    failures: list[LoadFailure] = []
    if not model_dir.is_dir():
        log.warning("model repository %s does not exist or is not a directory", model_dir)
        return found, failures
    for model_path in sorted(p for p in model_dir.iterdir() if p.is_dir()):
        if model_path.name.startswith("."):
            continue
        if not _NAME_RE.match(model_path.name):
            reason = f"directory name must match {NAME_PATTERN}"
            failures.append(LoadFailure(model_path.name, reason, str(model_path)))
            continue
        for version_path in sorted(p for p in model_path.iterdir() if p.is_dir()):
            if version_path.name.startswith("."):
                continue
            key = f"{model_path.name}/{version_path.name}"
            if not _VERSION_RE.match(version_path.name):
                reason = "version directory must be a positive integer"
                failures.append(LoadFailure(key, reason, str(version_path)))
                continue
            found.append(VersionDir(model_path.name, int(version_path.name), version_path))
    return found, failures


def log_loaded(model: LoadedModel) -> None:
    log.info(
        "loaded model %s version %d from %s on %s",
        model.name,
        model.version,
        model.path,
        model.providers,
    )


def log_failure(failure: LoadFailure) -> None:
    log.error("skipping model %s: %s", failure.path, failure.reason)


def _fail(repo: ModelRepository, failure: LoadFailure) -> None:
    log_failure(failure)
    repo.failures.append(failure)


def load_version(
    path: Path,
    providers: list[str],
    options: ort.SessionOptions,
    manifest_bytes: bytes | None = None,
) -> LoadedModel:
    """Validate and load one `<name>/<version>` directory, or raise ModelLoadError.

    `manifest_bytes`: the manifest as already read by the caller (else it is read here).
    """
    manifest = read_manifest(path, manifest_bytes)
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


def read_manifest_bytes(path: Path) -> bytes:
    try:
        return (path / "manifest.json").read_bytes()
    except FileNotFoundError as exc:
        raise ModelLoadError("manifest.json is missing") from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot read manifest.json: {exc.strerror or exc}") from exc


def read_manifest(path: Path, data: bytes | None = None) -> Manifest:
    try:
        raw = json.loads(read_manifest_bytes(path) if data is None else data)
    except ValueError as exc:
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


def file_sha256(file: Path) -> str:
    """The hex sha256 of a file's bytes; OSError when it cannot be read."""
    with file.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
