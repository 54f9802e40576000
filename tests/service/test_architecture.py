"""The serving install needs no torch: importing the whole service loads neither it nor training."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import service


def test_service_imports_neither_torch_nor_training() -> None:
    modules = [m.name for m in pkgutil.walk_packages(service.__path__, "service.")]
    assert "service.app" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
