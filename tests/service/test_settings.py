"""Settings from SEQCAST_ environment variables, validated at start-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("SEQCAST_")]:
        monkeypatch.delenv(key)
    s = Settings()
    assert (s.host, s.port, s.workers, s.log_level) == ("127.0.0.1", 8000, 1, "info")
    assert s.model_dir == Path("models")
    assert s.providers == "auto"
    assert s.api_keys.get_secret_value() == ""
    assert s.api_keys_file is None
    assert s.auth_exempt == "health"
    assert s.origins == frozenset()  # no other origin, no CORS


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQCAST_PORT", "9123")
    monkeypatch.setenv("SEQCAST_MODEL_DIR", "/srv/models")
    monkeypatch.setenv("SEQCAST_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("SEQCAST_MAX_HORIZON", "7")
    s = Settings()
    assert s.port == 9123
    assert s.model_dir == Path("/srv/models")
    assert s.log_level == "warning"
    assert s.max_horizon == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 70000),
        ("workers", 0),
        ("log_level", "loud"),
        ("max_horizon", 0),
        ("max_series_per_request", 0),
        ("max_values_per_series", -1),
        ("max_body_bytes", 10),
        ("intra_op_threads", -1),
        ("providers", "CPUExecutionProvider,,"),
    ],
)
def test_invalid_values_fail_fast(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})
