"""Re-scanning the model repository while the service runs (service.reload)."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.auth import KeyConfigError
from service.app import create_app, session_options
from service.inference import InferenceCore
from service.reload import Reloader
from service.runner import ModelRunner
from service.settings import Settings
from tests.modelkit import write_model
from tests.service.reload_support import AS_ADMIN, AS_USER, KEYS_ENV, publish, unpublish

KEYS = KEYS_ENV["SEQCAST_API_KEYS"]
VALUES = {"series": [{"values": [0.1, 0.5, -0.3, 0.2], "horizon": 2}]}


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions to publish: m/1, m/2, m/3 (three different LSTMs) and other/1."""
    root = tmp_path_factory.mktemp("stock")
    for version in (1, 2, 3):
        write_model(root, "m", "lstm", version=version, hidden=4, seed=version)
    write_model(root, "other", "gru", hidden=3, seed=9)
    return root


@pytest.fixture
def root(stock: Path, tmp_path: Path) -> Path:
    """A model directory serving m/1 and other/1."""
    root = tmp_path / "models"
    publish(stock, root, "m/1")
    publish(stock, root, "other/1")
    return root


def reloader_over(root: Path) -> Reloader:
    reloader = Reloader(root, ["CPUExecutionProvider"], session_options(Settings()))
    reloader.rescan(at_start=True)
    return reloader


MakeApp = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture
def make_app(root: Path) -> MakeApp:
    def make(**overrides: Any) -> AbstractContextManager[TestClient]:
        overrides.setdefault("model_dir", root)
        return TestClient(create_app(Settings(**overrides)))

    return make


def admin_app(make_app: MakeApp, **overrides: Any) -> AbstractContextManager[TestClient]:
    return make_app(api_keys=KEYS, admin_keys="admin", **overrides)


# The Reloader itself


def test_unchanged_versions_keep_their_loaded_model(stock: Path, root: Path) -> None:
    reloader = reloader_over(root)
    before = reloader.repository
    m1 = reloader.get("m", 1)
    report = reloader.rescan()
    assert (report.loaded, report.reloaded, report.unloaded) == ([], [], [])
    assert reloader.repository is before  # nothing changed: the same snapshot
    assert report.generation == 1
    # Touched, or replaced by a copy with the same bytes: still the same object.
    os.utime(root / "m" / "1" / "model.onnx")
    unpublish(root, "m/1")
    publish(stock, root, "m/1")
    report = reloader.rescan()
    assert report.reloaded == []
    assert reloader.get("m", 1) is m1


def test_a_new_version_becomes_the_default_in_one_swap(stock: Path, root: Path) -> None:
    reloader = reloader_over(root)
    before = reloader.repository
    publish(stock, root, "m/2")
    report = reloader.rescan()
    assert report.loaded == ["m/2"]
    assert report.models == ["m/1", "m/2", "other/1"]
    after = reloader.repository
    # A request holding the old snapshot still sees its whole set; the new one the new.
    default_before, default_after = before.get("m"), after.get("m")
    assert default_before is not None
    assert default_before.version == 1
    assert default_after is not None
    assert default_after.version == 2
    assert after.get("m", 1) is before.get("m", 1)
    assert after.get("other") is before.get("other")
    assert report.generation == 2


def test_changed_files_load_again_and_removed_versions_go(stock: Path, root: Path) -> None:
    reloader = reloader_over(root)
    m1 = reloader.get("m", 1)
    unloaded: list[str] = []
    reloader.on_unload.append(lambda models: unloaded.extend(m.name for m in models))
    # Version 1 now holds other bytes (and a manifest that says so).
    for file in ("model.onnx", "manifest.json"):
        shutil.copy(stock / "m" / "3" / file, root / "m" / "1" / file)
    (root / "m" / "1" / "manifest.json").write_text(
        (root / "m" / "1" / "manifest.json").read_text().replace('"version": 3', '"version": 1')
    )
    report = reloader.rescan()
    assert report.reloaded == ["m/1"]
    assert reloader.get("m", 1) is not m1
    unpublish(root, "other/1")
    report = reloader.rescan()
    assert report.unloaded == ["other/1"]
    assert reloader.get("other") is None
    assert unloaded == ["m", "other"]  # the replaced load of m/1, then other/1


def test_a_removed_version_is_freed(stock: Path, root: Path) -> None:
    reloader = reloader_over(root)
    m1 = reloader.get("m", 1)
    assert m1 is not None
    gone = weakref.ref(m1)
    del m1
    unpublish(root, "m/1")
    reloader.rescan()
    gc.collect()
    assert gone() is None


def test_a_broken_version_disturbs_nothing_and_is_logged_once(
    stock: Path, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = reloader_over(root)
    before = reloader.repository
    with caplog.at_level(logging.ERROR):
        publish(stock, root, "m/2", broken=True)
        report = reloader.rescan()
        reloader.rescan()  # an unchanged failure is neither loaded again nor logged again
    (failure,) = report.failures
    assert (failure.model, failure.at_start, failure.serving) == ("m/2", False, False)
    assert "onnxruntime cannot load" in failure.reason
    assert report.models == ["m/1", "other/1"]
    assert reloader.get("m") is before.get("m")  # the default is still version 1
    assert len([r for r in caplog.records if "m/2" in r.getMessage()]) == 1


def test_a_served_version_whose_files_break_keeps_serving(stock: Path, root: Path) -> None:
    reloader = reloader_over(root)
    m1 = reloader.get("m", 1)
    onnx = root / "m" / "1" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    report = reloader.rescan()
    (failure,) = report.failures
    assert (failure.model, failure.serving) == ("m/1", True)
    assert "sha256" in failure.reason
    assert reloader.get("m", 1) is m1
    # Put right again: the failure goes, and the same bytes keep the same object.
    onnx.write_bytes(onnx.read_bytes()[:-1])
    report = reloader.rescan()
    assert report.failures == []
    assert reloader.get("m", 1) is m1


def test_load_and_unload_one_model_by_name(stock: Path, root: Path) -> None:
    reloader = reloader_over(root)
    report = reloader.unload("m")
    assert report.unloaded == ["m/1"]
    assert report.models == ["other/1"]
    publish(stock, root, "m/2")
    assert reloader.rescan().models == ["other/1"]  # re-scans leave an unloaded name out
    assert reloader.unloaded_names == ["m"]
    report = reloader.load("m")
    assert report.loaded == ["m/1", "m/2"]
    assert reloader.unloaded_names == []
    # A load by name looks at that model only.
    publish(stock, root, "m/3")
    unpublish(root, "other/1")
    assert reloader.load("m").models == ["m/1", "m/2", "m/3", "other/1"]


# Through the service


def test_admin_endpoints_need_an_admin_key(make_app: MakeApp) -> None:
    with make_app() as c:  # no admin key configured: there is no /admin
        assert c.post("/admin/reload").status_code == 404
        assert c.get("/admin/repository").status_code == 404
    with admin_app(make_app) as c:
        missing = c.post("/admin/reload")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "unauthorized"
        denied = c.post("/admin/reload", headers=AS_USER)
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "admin_key_required"
        assert c.get("/admin/repository", headers=AS_USER).status_code == 403
        assert c.get("/v1/models", headers=AS_USER).status_code == 200  # other paths as usual
        ok = c.post("/admin/reload", headers=AS_ADMIN)
        assert ok.status_code == 200
        assert ok.json()["models"] == ["m/1", "other/1"]
        assert ok.json()["other_workers_signalled"] is False
        view = c.get("/admin/repository", headers=AS_ADMIN).json()
        assert view["defaults"] == {"m": 1, "other": 1}
        assert view["worker"] == os.getpid()


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"api_keys": KEYS, "admin_keys": "root"}, "['root'], which SEQCAST_API_KEYS"),
        ({"admin_keys": "admin"}, "no API keys are configured"),
    ],
)
def test_admin_keys_must_name_api_keys(
    make_app: MakeApp, overrides: dict[str, str], words: str
) -> None:
    with pytest.raises(KeyConfigError, match=words.replace("[", r"\[")):
        make_app(**overrides)


def test_reload_through_the_service(stock: Path, root: Path, make_app: MakeApp) -> None:
    with admin_app(make_app) as c:
        first = c.post("/v1/models/m/predict", json=VALUES, headers=AS_USER).json()
        assert first["version"] == 1
        publish(stock, root, "m/2")
        unpublish(root, "other/1")
        publish(stock, root, "m/3", broken=True)
        report = c.post("/admin/reload", headers=AS_ADMIN).json()
        assert report["loaded"] == ["m/2"]
        assert report["unloaded"] == ["other/1"]
        assert [f["model"] for f in report["failures"]] == ["m/3"]
        assert report["models"] == ["m/1", "m/2"]
        assert c.post("/v1/models/m/predict", json=VALUES, headers=AS_USER).json()["version"] == 2
        gone = c.post("/v1/models/other/predict", json=VALUES, headers=AS_USER)
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "model_not_found"
        listed = c.get("/v1/models", headers=AS_USER).json()["models"]
        assert [(m["name"], m["versions"], m["default_version"]) for m in listed] == [
            ("m", [1, 2], 2)
        ]
        # A version broken at runtime is listed, and the replica stays in rotation.
        ready = c.get("/readyz")
        assert ready.status_code == 200
        (failure,) = ready.json()["failures"]
        assert failure["model"] == "m/3"
        assert failure["found"] == "reload"
        assert failure["serving"] is False
        # The OpenAPI document follows the new set.
        paths = c.get("/openapi.json", headers=AS_USER).json()["paths"]
        assert "/v1/models/m/versions/2/predict" in paths
        assert "/v1/models/other/predict" not in paths


def test_a_failure_at_start_up_keeps_503_until_it_loads(
    stock: Path, root: Path, make_app: MakeApp
) -> None:
    publish(stock, root, "m/2", broken=True)
    with admin_app(make_app) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["failures"][0]["found"] == "start-up"
        c.post("/admin/reload", headers=AS_ADMIN)  # still broken: still not ready
        assert c.get("/readyz").status_code == 503
        unpublish(root, "m/2")
        publish(stock, root, "m/2")
        assert c.post("/admin/reload", headers=AS_ADMIN).json()["loaded"] == ["m/2"]
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["failures"] == []


def test_removing_every_model_is_not_ready(root: Path, make_app: MakeApp) -> None:
    with admin_app(make_app) as c:
        unpublish(root, "m/1")
        unpublish(root, "other/1")
        assert c.post("/admin/reload", headers=AS_ADMIN).json()["models"] == []
        assert c.get("/readyz").status_code == 503


def test_polling_picks_up_a_new_version(stock: Path, root: Path, make_app: MakeApp) -> None:
    with make_app(reload_poll_s=0.05) as c:
        publish(stock, root, "m/2")
        deadline = time.monotonic() + 30
        while c.get("/v1/models/m").json()["default_version"] != 2:
            assert time.monotonic() < deadline, "the poller did not load m/2"
            time.sleep(0.05)
        assert c.post("/v1/models/m/predict", json=VALUES).json()["version"] == 2


def test_sessions_on_a_removed_version_get_410(root: Path, make_app: MakeApp) -> None:
    with admin_app(make_app) as c:
        created = c.post("/v1/models/m/versions/1/sessions", headers=AS_USER)
        session = created.json()["session"]
        step = {"values": [0.5, 0.1], "offset": 0}
        observe = f"/v1/sessions/{session}/observe"
        assert c.post(observe, json=step, headers=AS_USER).status_code == 200
        unpublish(root, "m/1")
        c.post("/admin/reload", headers=AS_ADMIN)
        gone = c.post(observe, json={"values": [0.2], "offset": 2}, headers=AS_USER)
        assert gone.status_code == 410
        assert gone.json()["error"]["code"] == "version_gone"


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """(entered, release): a prediction on m version 1 waits at `release` once entered."""
    entered, release = threading.Event(), threading.Event()
    predict = InferenceCore.predict

    def gated(core: InferenceCore, inputs: Any, runs: Any = None) -> Any:
        if core.model.name == "m" and core.model.version == 1:
            entered.set()
            assert release.wait(10)
        return predict(core, inputs, runs)

    monkeypatch.setattr(InferenceCore, "predict", gated)
    yield entered, release
    release.set()


def test_a_removed_version_drains_its_requests_in_flight(
    stock: Path, root: Path, make_app: MakeApp, gate: tuple[threading.Event, threading.Event]
) -> None:
    entered, release = gate
    # inline_max_steps=0: predictions run on worker threads, where one can wait.
    with admin_app(make_app, inline_max_steps=0) as c:
        path = "/v1/models/m/versions/1/predict"
        release.set()
        expected = c.post(path, json=VALUES, headers=AS_USER).json()
        release.clear()
        entered.clear()  # set by the request above: wait for the next one
        answers: list[Any] = []
        flight = threading.Thread(
            target=lambda: answers.append(c.post(path, json=VALUES, headers=AS_USER))
        )
        flight.start()
        try:
            assert entered.wait(30)  # the request holds version 1 and is computing
            held = c.app_state["seqcast"].repository.get("m", 1)
            held_ref = weakref.ref(held)
            del held
            unpublish(root, "m/1")
            publish(stock, root, "m/2")
            report = c.post("/admin/reload", headers=AS_ADMIN).json()
            assert (report["loaded"], report["unloaded"]) == (["m/2"], ["m/1"])
            after = c.post(path, json=VALUES, headers=AS_USER)
            assert after.status_code == 404
            assert after.json()["error"]["code"] == "version_not_found"
            assert held_ref() is not None  # still in use by the request in flight
        finally:
            release.set()
            flight.join(30)
        (answer,) = answers
        assert answer.status_code == 200
        assert answer.json()["version"] == 1
        np.testing.assert_array_equal(
            answer.json()["series"][0]["forecast"], expected["series"][0]["forecast"]
        )
        c.get("/healthz")  # one more turn of the app's loop, where the runner forgets it
        gc.collect()
        assert held_ref() is None  # the last request done, version 1's memory is freed


def replace_in_place(root: Path, tmp_path: Path, key: str, hidden: int) -> None:
    """Rewrite <name>/<version> with another model (another state shape), same name."""
    name, version = key.split("/")
    fresh = tmp_path / "fresh"
    write_model(fresh, name, "lstm", version=int(version), hidden=hidden, seed=42)
    unpublish(root, key)
    shutil.copytree(fresh / name / version, root / name / version)


def test_a_version_replaced_in_place_lets_go_of_the_old_model(root: Path, tmp_path: Path) -> None:
    reloader = reloader_over(root)
    runner = ModelRunner(1024)
    reloader.on_unload.append(lambda models: [runner.forget(m) for m in models])
    old = reloader.get("m", 1)
    assert old is not None
    runner.core(old)  # as a request would: the runner keeps a core for it
    gone = weakref.ref(old)
    del old
    replace_in_place(root, tmp_path, "m/1", hidden=6)
    report = reloader.rescan()
    assert report.reloaded == ["m/1"]
    gc.collect()
    assert gone() is None  # neither the snapshot nor the runner holds the old load


def test_sessions_on_a_version_reloaded_with_another_shape_get_410(
    root: Path, tmp_path: Path, make_app: MakeApp
) -> None:
    with admin_app(make_app) as c:
        session = c.post("/v1/models/m/versions/1/sessions", headers=AS_USER).json()["session"]
        observe = f"/v1/sessions/{session}/observe"
        step = {"values": [0.5, 0.1], "offset": 0}
        assert c.post(observe, json=step, headers=AS_USER).status_code == 200
        replace_in_place(root, tmp_path, "m/1", hidden=6)  # the stock m/1 has hidden 4
        assert c.post("/admin/reload", headers=AS_ADMIN).json()["reloaded"] == ["m/1"]
        for answer in (
            c.post(observe, json={"values": [0.2], "offset": 2}, headers=AS_USER),
            c.post(observe, json=step, headers=AS_USER),  # a retry of the last step
            c.get(f"/v1/sessions/{session}?state=true", headers=AS_USER),
        ):
            assert answer.status_code == 410, answer.text
            assert answer.json()["error"]["code"] == "version_gone"
            assert "another state shape" in answer.json()["error"]["message"]
