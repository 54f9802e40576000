"""Shared fixtures: a model repository of tiny exported models, and service clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.modelkit import write_model

pytest_plugins = ["tests.redis_fixture"]

# name -> (cell, keyword arguments of write_model)
TINY_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny-rnn": ("rnn", {"hidden": 6, "layers": 1, "seed": 1}),
    "tiny-lstm": ("lstm", {"hidden": 8, "layers": 2, "seed": 2}),
    "tiny-gru": ("gru", {"hidden": 5, "layers": 2, "seed": 3}),
    # Two features, one target: no multi-step rollout.
    "two-in-one-out": ("gru", {"hidden": 4, "features": ["a", "b"], "targets": ["a"]}),
    # Two features that are also the targets: rollout over rows.
    "two-in-two-out": ("lstm", {"hidden": 4, "features": ["a", "b"], "seed": 5}),
}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository of tiny models; tiny-lstm has versions 1 and 2."""
    root = tmp_path_factory.mktemp("models")
    for name, (cell, kwargs) in TINY_MODELS.items():
        write_model(root, name, cell, **kwargs)
    write_model(root, "tiny-lstm", "lstm", version=2, hidden=8, layers=2, seed=7)
    return root


@pytest.fixture(scope="session")
def make_client(
    model_dir: Path,
) -> Callable[..., AbstractContextManager[TestClient]]:
    """`with make_client(max_horizon=4) as c:` a client whose lifespan runs, over model_dir."""

    def make(**overrides: Any) -> AbstractContextManager[TestClient]:
        overrides.setdefault("model_dir", model_dir)
        # Raw bodies in tests are JSON (or meant to fail as JSON): say so, as clients do.
        return TestClient(
            create_app(Settings(**overrides)), headers={"content-type": "application/json"}
        )

    return make


@pytest.fixture(scope="module")
def client(make_client: Callable[..., AbstractContextManager[TestClient]]) -> Iterator[TestClient]:
    """One started service over the tiny models, shared by a test module."""
    with make_client() as c:
        yield c


@pytest.fixture(scope="module")
def api(client: TestClient) -> TestClient:
    """The service as predict tests use it (the same one service per module)."""
    return client
