"""Loading the model repository: a broken version is skipped and reported, the rest serve."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.modelkit import write_model


@pytest.fixture(scope="module")
def good_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("good")
    write_model(root, "ok", "gru", hidden=4)
    write_model(root, "bad", "lstm", hidden=4)
    write_model(root, "rnn", "rnn", hidden=4)
    return root


def edit_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(version_dir: Path) -> None:
        path = version_dir / "manifest.json"
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))

    return apply


def set_in(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        target = manifest
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda manifest: manifest.pop(key)


def rehash(version_dir: Path) -> None:
    digest = hashlib.sha256((version_dir / "model.onnx").read_bytes()).hexdigest()
    edit_manifest(set_in("onnx", "sha256", value=digest))(version_dir)


def garbage_model(version_dir: Path) -> None:
    (version_dir / "model.onnx").write_bytes(b"not an onnx graph")
    rehash(version_dir)


def claims_hidden_16(manifest: dict[str, Any]) -> None:
    manifest["architecture"]["hidden_size"] = 16
    for spec in manifest["onnx"]["inputs"] + manifest["onnx"]["outputs"]:
        if spec["name"] != "x" and spec["name"] != "y":
            spec["shape"][2] = 16


def rnn_graph(version_dir: Path, rnn_dir: Path) -> None:
    shutil.copy(rnn_dir / "model.onnx", version_dir / "model.onnx")
    rehash(version_dir)


# (id, how to break bad/1, words the reason must contain)
BREAKS: list[tuple[str, Callable[[Path], None], str]] = [
    ("sha256 mismatch", edit_manifest(set_in("onnx", "sha256", value="0" * 64)), "sha256"),
    ("file altered", lambda d: (d / "model.onnx").write_bytes(
        (d / "model.onnx").read_bytes() + b"\0"), "sha256"),
    ("file missing", lambda d: (d / "model.onnx").unlink(), "cannot read model.onnx"),
    ("manifest missing", lambda d: (d / "manifest.json").unlink(), "manifest.json is missing"),
    ("manifest not json", lambda d: (d / "manifest.json").write_text("{"), "not valid JSON"),
    ("field missing", edit_manifest(drop("window")), "window"),
    ("unknown cell", edit_manifest(set_in("architecture", "cell", value="tcn")), "cell"),
    ("name disagrees", edit_manifest(set_in("name", value="other")), "disagrees"),
    ("version disagrees", edit_manifest(set_in("version", value=3)), "disagrees"),
    ("degenerate minmax", edit_manifest(set_in("scalers", "value", "max", value=-2.0)),
     "degenerate"),
    ("degenerate std", edit_manifest(set_in(
        "scalers", "value", value={"kind": "standard", "mean": 0.0, "std": 0.0})), "degenerate"),
    ("scaler missing", edit_manifest(set_in("scalers", value={})), "no scaler"),
    ("sizes disagree", edit_manifest(set_in("architecture", "input_size", value=2)),
     "input_size"),
    ("manifest io disagrees", edit_manifest(set_in("onnx", "inputs", value=[])), "onnx.inputs"),
    ("graph disagrees", edit_manifest(claims_hidden_16), "expected [1, 'batch', 16]"),
    ("not a graph", garbage_model, "onnxruntime cannot load"),
]  # fmt: skip


@pytest.mark.parametrize(("how", "reason"), [b[1:] for b in BREAKS], ids=[b[0] for b in BREAKS])
def test_broken_version_is_skipped_and_reported(
    good_models: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    how: Callable[[Path], None],
    reason: str,
) -> None:
    root = tmp_path / "models"
    shutil.copytree(good_models, root)
    how(root / "bad" / "1")
    with caplog.at_level(logging.ERROR), TestClient(create_app(Settings(model_dir=root))) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "not_ready"
        (failure,) = body["failures"]
        # Readiness names the version, never a file path (those go to the log).
        assert failure["model"] == "bad/1"
        assert "path" not in failure
        assert str(root) not in ready.text
        assert reason in failure["reason"]
        assert [m["name"] for m in c.get("/v1/models").json()["models"]] == ["ok", "rnn"]
        ok = c.post("/v1/models/ok/predict", json={"series": [{"values": [1.0, 2.0]}]})
        assert ok.status_code == 200
        bad = c.post("/v1/models/bad/predict", json={"series": [{"values": [1.0]}]})
        assert bad.status_code == 404
    logged = [r.getMessage() for r in caplog.records if r.name == "service.repository"]
    assert len(logged) == 1
    assert str(root / "bad" / "1") in logged[0]
    assert reason in logged[0]


def test_a_graph_of_another_cell_is_refused(good_models: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(good_models, root)
    rnn_graph(root / "bad" / "1", good_models / "rnn" / "1")
    with TestClient(create_app(Settings(model_dir=root))) as c:
        (failure,) = c.get("/readyz").json()["failures"]
    assert (
        "ONNX graph inputs are ['h0', 'x'], the contract needs ['c0', 'h0', 'x']"
        in (failure["reason"])
    )


@pytest.mark.parametrize(
    ("directory", "reason"),
    [
        ("bad/v1", "positive integer"),
        ("bad/01", "positive integer"),
        ("Bad-Name/1", "directory name must match"),
    ],
)
def test_badly_named_directories(
    good_models: Path, tmp_path: Path, directory: str, reason: str
) -> None:
    root = tmp_path / "models"
    shutil.copytree(good_models, root)
    target = root / directory
    target.parent.mkdir(exist_ok=True)
    shutil.move(root / "bad" / "1", target)
    with TestClient(create_app(Settings(model_dir=root))) as c:
        ready = c.get("/readyz")
    assert ready.status_code == 503
    assert reason in ready.json()["failures"][0]["reason"]


def test_empty_or_missing_repository_is_not_ready(tmp_path: Path) -> None:
    for root in (tmp_path, tmp_path / "absent"):
        with TestClient(create_app(Settings(model_dir=root))) as c:
            ready = c.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["failures"][0]["reason"] == "the model repository holds no models"
            assert c.get("/v1/models").json() == {"models": []}
            assert c.get("/healthz").status_code == 200


def test_hidden_directories_and_files_are_ignored(good_models: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(good_models, root)
    shutil.rmtree(root / "bad")
    (root / ".cache").mkdir()
    (root / "README.md").write_text("models")
    (root / "ok" / "notes.txt").write_text("v1 is good")
    with TestClient(create_app(Settings(model_dir=root))) as c:
        assert c.get("/readyz").status_code == 200


def test_highest_version_is_the_default(tmp_path: Path) -> None:
    write_model(tmp_path, "m", "gru", hidden=3, version=2, seed=1)
    write_model(tmp_path, "m", "gru", hidden=3, version=10, seed=2)
    with TestClient(create_app(Settings(model_dir=tmp_path))) as c:
        body = c.post("/v1/models/m/predict", json={"series": [{"values": [1.0]}]}).json()
        assert body["version"] == 10
        assert c.get("/v1/models/m").json()["versions"] == [2, 10]
