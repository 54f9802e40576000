"""Fixtures for the training tests: tiny configurations that fit in well under a second."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import TrainConfig
from training.data import Series, synthetic_sine
from training.pipeline import Trained, train


def tiny_config(cell: str = "gru", **overrides: object) -> TrainConfig:
    """A configuration small enough for tests: 4 hidden units, 10-step windows, 2 epochs."""
    base: dict[str, object] = {
        "cell": cell,
        "hidden_size": 4,
        "window": 10,
        "burn_in": 2,
        "batch_size": 64,
        "epochs": 2,
        "patience": 2,
    }
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def sine() -> Series:
    return synthetic_sine(42)


@pytest.fixture(scope="session")
def tiny_trained(sine: Series) -> Trained:
    return train(sine, tiny_config("lstm"))


@pytest.fixture(scope="session")
def nile_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Yearly flow of the Nile at Aswan, 1871-1970 (100 rows): statsmodels' bundled copy."""
    from statsmodels.datasets import nile

    df = nile.load_pandas().data
    path = tmp_path_factory.mktemp("data") / "nile.csv"
    rows = [f"{int(y)},{v:g}" for y, v in zip(df["year"], df["volume"], strict=True)]
    path.write_text("year,volume\n" + "\n".join(rows) + "\n")
    return path
