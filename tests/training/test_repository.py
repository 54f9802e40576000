"""Repository writes: manifest fields, sha256, version auto-increment, never an overwrite,
and never a manifest that the service would refuse."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import pytest

from service.repository import load_version, read_manifest
from training.manifest import Manifest
from training.onnx_export import check_parity, export_onnx, parity_record
from training.pipeline import Trained, training_inputs
from training.repository import build_manifest, existing_versions, write_version
from training.scalers import Scaler

Exported = tuple[bytes, dict[str, Any]]  # ONNX bytes, the manifest's parity block


@pytest.fixture(scope="module")
def exported(tiny_trained: Trained) -> Exported:
    blob = export_onnx(tiny_trained.model)
    window = tiny_trained.config.window
    err = check_parity(tiny_trained.model, blob, window, pool=training_inputs(tiny_trained))
    return blob, parity_record(err, window, bootstrapped=True)


def _write(repo: Path, trained: Trained, exported: Exported, name: str = "m") -> Path:
    blob, err = exported
    return write_version(repo, name, blob, lambda v: build_manifest(trained, name, v, blob, err))


def test_manifest_describes_the_model(
    tmp_path: Path, tiny_trained: Trained, exported: Exported
) -> None:
    path = _write(tmp_path, tiny_trained, exported, "sine-lstm")
    assert path == tmp_path / "sine-lstm" / "1"
    m: dict[str, Any] = json.loads((path / "manifest.json").read_text())
    assert m["format_version"] == 1
    assert (m["name"], m["version"]) == ("sine-lstm", 1)
    assert m["architecture"] == {
        "cell": "lstm",
        "input_size": 1,
        "hidden_size": 4,
        "num_layers": 1,
        "output_size": 1,
        "dropout": 0.0,
    }
    assert m["features"] == m["targets"] == ["value"]
    assert m["scalers"]["value"]["kind"] == "standard"
    assert m["scalers"]["value"]["std"] > 0
    assert m["window"] == 10
    onnx_block = m["onnx"]
    assert onnx_block["sha256"] == hashlib.sha256((path / "model.onnx").read_bytes()).hexdigest()
    assert onnx_block["opset"] == 17
    assert [i["name"] for i in onnx_block["inputs"]] == ["x", "h0", "c0"]
    assert [o["name"] for o in onnx_block["outputs"]] == ["y", "h_n", "c_n"]
    assert onnx_block["inputs"][1]["shape"] == [1, "batch", 4]
    parity = onnx_block["parity"]
    assert 0 <= parity["max_abs_error"] <= parity["tolerance"] == 1e-5
    assert parity["batches"] == [1, 3, 64]
    assert parity["times"] == [1, 7, 10, 103]
    graph = onnx.load(str(path / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["x", "h0", "c0"]
    t = m["training"]
    assert t["dataset"] == {
        "name": "synthetic-sine",
        "sha256": tiny_trained.series.sha256,
        "rows": 1000,
        "noise_seed": 42,
    }
    assert t["split"] == {"train": 640, "validation": 160, "test": 200}
    assert t["config"] == tiny_trained.config.to_dict()
    assert t["seed"] == 42
    assert 1 <= t["best_epoch"] <= t["epochs"] == tiny_trained.history.epochs_run
    assert set(t["versions"]) >= {"python", "torch", "onnx", "onnxruntime", "numpy"}
    assert t["created_at"].endswith("Z")
    test = m["metrics"]["test"]
    assert set(test) == {"streaming", "windowed", "persistence", "noiseless"}
    for block in test.values():
        assert set(block) == {"rmse", "mae", "smape"}
    ratios = m["metrics"]["ratios"]
    assert ratios["streaming_vs_noiseless"] == pytest.approx(
        test["streaming"]["rmse"] / test["noiseless"]["rmse"]
    )


def test_versions_increment_and_never_overwrite(
    tmp_path: Path, tiny_trained: Trained, exported: Exported
) -> None:
    first = _write(tmp_path, tiny_trained, exported)
    marker = first / "manifest.json"
    before = marker.read_bytes()
    (tmp_path / "m" / "7").mkdir()  # a gap: the next version is after the highest
    (tmp_path / "m" / "7" / "keep").write_text("untouched")
    second = _write(tmp_path, tiny_trained, exported)
    assert second.name == "8"
    assert marker.read_bytes() == before
    assert (tmp_path / "m" / "7" / "keep").read_text() == "untouched"
    assert existing_versions(tmp_path, "m") == [1, 7, 8]
    assert json.loads((second / "manifest.json").read_text())["version"] == 8
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "7", "8"]  # no temp dirs


def test_a_version_taken_meanwhile_is_skipped(
    tmp_path: Path, tiny_trained: Trained, exported: Exported
) -> None:
    """Another writer claims version 1 between numbering and renaming: we take 2."""
    blob, err = exported
    seen: list[int] = []

    def manifest_for(v: int) -> Manifest:
        seen.append(v)
        if v == 1:
            (tmp_path / "m" / "1").mkdir(parents=True)
            (tmp_path / "m" / "1" / "manifest.json").write_text("{}")
        return build_manifest(tiny_trained, "m", v, blob, err)

    path = write_version(tmp_path, "m", blob, manifest_for)
    assert seen == [1, 2]
    assert path.name == "2"
    assert (tmp_path / "m" / "1" / "manifest.json").read_text() == "{}"


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "a/b", "x" * 65])
def test_bad_names_are_refused_before_writing(
    tmp_path: Path, tiny_trained: Trained, exported: Exported, name: str
) -> None:
    with pytest.raises(ValueError, match="must match"):
        _write(tmp_path, tiny_trained, exported, name)
    assert list(tmp_path.iterdir()) == []


def test_a_written_version_loads_in_the_service(
    tmp_path: Path, tiny_trained: Trained, exported: Exported
) -> None:
    blob, parity = exported
    written = build_manifest(tiny_trained, "sine-lstm", 1, blob, parity)
    path = write_version(tmp_path, "sine-lstm", blob, lambda v: written)
    assert read_manifest(path) == written
    loaded = load_version(path, ["CPUExecutionProvider"], ort.SessionOptions())
    assert (loaded.name, loaded.version) == ("sine-lstm", 1)
    assert loaded.state_shape == (1, 4)


def _changed(trained: Trained, field: str, value: Any) -> Trained:
    return dataclasses.replace(trained, **{field: value})


# (id, how the training run is wrong, words the refusal must contain)
BAD_RUNS: list[tuple[str, Callable[[Trained], Trained], str]] = [
    ("degenerate scaler", lambda t: _changed(
        t, "scalers", {"value": Scaler("standard", 0.0, 0.0)}), "degenerate"),
    ("features the model does not take", lambda t: _changed(
        t, "series", dataclasses.replace(t.series, feature_names=("value", "other"))),
     "input_size"),
    ("no scaler for a column", lambda t: _changed(t, "scalers", {}), "no scaler"),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "reason"), [b[1:] for b in BAD_RUNS], ids=[b[0] for b in BAD_RUNS])
def test_a_manifest_breaking_the_schema_is_refused_before_writing(
    tmp_path: Path,
    tiny_trained: Trained,
    exported: Exported,
    bad: Callable[[Trained], Trained],
    reason: str,
) -> None:
    with pytest.raises(ValueError, match=reason):
        _write(tmp_path, bad(tiny_trained), exported)
    assert list(tmp_path.iterdir()) == []


def _edited(change: Callable[[dict[str, Any]], None]) -> Callable[[Manifest], Manifest]:
    """A manifest edited as JSON, for the wrongs that build_manifest cannot be led into."""

    def apply(manifest: Manifest) -> Manifest:
        raw = manifest.model_dump(mode="json")
        change(raw)
        return Manifest.model_validate(raw)

    return apply


def _set(*keys: str | int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        target: Any = raw
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def _keep(manifest: Manifest) -> Manifest:
    return manifest


# (id, name written, edit of its manifest, words the refusal must contain)
BAD_MANIFESTS: list[tuple[str, str, Callable[[Manifest], Manifest], str]] = [
    ("wrong state shape", "m", _edited(
        _set("onnx", "inputs", 1, "shape", value=[1, "batch", 5])), "onnx.inputs h0"),
    ("static time axis", "m", _edited(
        _set("onnx", "outputs", 0, "shape", value=["batch", 10, 1])), "onnx.outputs y"),
    ("an input missing", "m", _edited(
        lambda raw: raw["onnx"]["inputs"].pop()), "onnx.inputs are"),
    ("bad name inside", "m", _edited(_set("name", value="Upper")), "pattern"),
    ("another name", "m", _edited(_set("name", value="other")), "other/1 but would be"),
    ("another version", "m", _edited(_set("version", value=2)), "m/2 but would be"),
    ("another model's hash", "m", _edited(_set("onnx", "sha256", value="0" * 64)), "hash to"),
    ("another file", "m", _edited(_set("onnx", "file", value="other.onnx")), "onnx.file"),
    ("bad directory name", "Upper", _keep, "must match"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "edit", "reason"), [b[1:] for b in BAD_MANIFESTS], ids=[b[0] for b in BAD_MANIFESTS]
)
def test_a_manifest_the_service_would_refuse_is_refused_before_writing(
    tmp_path: Path,
    tiny_trained: Trained,
    exported: Exported,
    name: str,
    edit: Callable[[Manifest], Manifest],
    reason: str,
) -> None:
    blob, parity = exported

    def manifest_for(v: int) -> Manifest:
        return edit(build_manifest(tiny_trained, "m", v, blob, parity))

    with pytest.raises(ValueError, match=reason):
        write_version(tmp_path, name, blob, manifest_for)
    assert list(tmp_path.iterdir()) == []
