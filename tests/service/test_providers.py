"""Execution providers: auto, explicit lists, and names onnxruntime cannot use."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.providers import ProviderError, resolve_providers
from service.settings import Settings

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@pytest.fixture
def offers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The provider list onnxruntime claims to offer; tests fill it."""
    offered: list[str] = []
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(offered))
    return offered


@pytest.mark.parametrize(
    ("offered", "setting", "chosen"),
    [
        ([CUDA, CPU], "auto", [CUDA, CPU]),
        (["TensorrtExecutionProvider", CUDA, CPU], "auto", [CUDA, CPU]),
        ([CPU], "auto", [CPU]),
        ([CUDA, CPU], CPU, [CPU]),
        ([CUDA, CPU], f"{CPU},{CUDA}", [CPU, CUDA]),
        ([CUDA, CPU], f" {CUDA} , {CPU} ", [CUDA, CPU]),
    ],
)
def test_resolution(offers: list[str], offered: list[str], setting: str, chosen: list[str]) -> None:
    offers.extend(offered)
    assert resolve_providers(Settings(providers=setting).providers) == chosen


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("FooExecutionProvider", "unknown execution provider 'FooExecutionProvider'"),
        (f"{CPU},cuda", "unknown execution provider 'cuda'"),
        (CUDA, f"execution provider '{CUDA}' in SEQCAST_PROVIDERS is not available"),
    ],
)
def test_unusable_names_stop_start_up(
    offers: list[str], model_dir: Path, setting: str, message: str
) -> None:
    offers.append(CPU)
    app = create_app(Settings(providers=setting, model_dir=model_dir))
    with pytest.raises(ProviderError, match=message), TestClient(app):
        pass


@pytest.mark.parametrize("setting", ["", ",", f"{CPU},,{CUDA}", f"{CPU},{CPU}"])
def test_malformed_setting_fails_fast(setting: str) -> None:
    with pytest.raises(ValidationError, match="providers"):
        Settings(providers=setting)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")
def test_models_report_the_provider_actually_in_use(
    offers: list[str], model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # onnxruntime is told CUDA exists but this build has none: it falls back to CPU, and the
    # service reports what the session really runs on, with a warning.
    offers.extend([CUDA, CPU])
    with (
        caplog.at_level(logging.WARNING),
        TestClient(create_app(Settings(model_dir=model_dir))) as c,
    ):
        info = c.get("/v1/models/tiny-gru").json()["latest"]
        assert c.get("/readyz").status_code == 200
    assert info["providers"] == [CPU]
    assert any(
        "not on the requested CUDAExecutionProvider" in r.getMessage() for r in caplog.records
    )
