"""The serving install needs no torch: importing the whole service loads no torch, and from
training/ only the torch-free manifest schema that both halves share."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import service

# All that the service may take from training/: the package (import-free) and the schema.
ALLOWED_FROM_TRAINING = ["training", "training.manifest"]


def loaded_by(modules: list[str]) -> list[str]:
    """torch and training modules in sys.modules after importing `modules` in a fresh process."""
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "found = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training'))\n"
        "print(','.join(found))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return [m for m in result.stdout.strip().split(",") if m]


def test_service_loads_no_torch_and_only_the_manifest_schema_from_training() -> None:
    modules = [m.name for m in pkgutil.walk_packages(service.__path__, "service.")]
    assert "service.app" in modules
    assert loaded_by(modules) == ALLOWED_FROM_TRAINING


def test_the_check_sees_torch_behind_a_training_import() -> None:
    """Were the service to import training's models, the check above would catch it."""
    found = loaded_by(["service.app", "training.models"])
    assert "torch" in found
    assert "training.models" in found
