"""Target transforms: chosen from the training rows, inverted exactly, reported in levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import DataError, Series, load_csv, synthetic_sine
from training.manifest import TargetTransform
from training.pipeline import train
from training.transforms import apply, check, choose, parse, paths_to_levels, to_levels

from .conftest import tiny_config


def _series(values: np.ndarray, name: str = "y") -> Series:
    column = values.reshape(-1, 1).astype(np.float64)
    return Series(name, "0" * 64, (name,), (name,), column, column.copy())


@pytest.mark.parametrize(
    ("kind", "season", "log", "lag"),
    [
        ("none", None, None, 0),
        ("log", None, "log", 0),
        ("log1p", None, "log1p", 0),
        ("diff", None, None, 1),
        ("seasonal-diff", 12, None, 12),
        ("log-diff", None, "log", 1),
        ("log1p-seasonal-diff", 4, "log1p", 4),
    ],
)
def test_parse_names_as_on_the_command_line(
    kind: str, season: int | None, log: str | None, lag: int
) -> None:
    t = parse(kind, season)
    assert (t.log, t.lag) == (log, lag)
    assert t.kind == kind


@pytest.mark.parametrize("kind", ["diff", "seasonal-diff", "log-diff", "log-seasonal-diff"])
def test_true_differences_give_back_the_levels(kind: str) -> None:
    rng = np.random.default_rng(0)
    y = _series(np.exp(np.cumsum(rng.normal(0.01, 0.05, 60))) * 100)
    t = parse(kind, 6)
    model = apply(t, y)
    assert model.rows == y.rows - t.lag
    rows = np.arange(t.lag, y.rows)
    np.testing.assert_allclose(to_levels(t, model.targets, y.targets, rows), y.targets[rows])
    # Multi-step: the true differences after an origin rebuild the following levels.
    origins = np.array([t.lag + 3, 30, 50])
    horizon = 5
    diffs = np.stack([model.targets[o - t.lag + 1 : o - t.lag + 1 + horizon] for o in origins])
    paths = paths_to_levels(t, diffs, y.targets, origins)
    want = np.stack([y.targets[o + 1 : o + 1 + horizon] for o in origins])
    np.testing.assert_allclose(paths, want)


def test_auto_differences_a_trending_series_and_leaves_a_stationary_one() -> None:
    rng = np.random.default_rng(1)
    trend = np.cumsum(rng.normal(0.5, 1.0, 200))
    assert choose(trend[:, None], None).lag == 1
    sine = synthetic_sine(42)
    chosen = choose(sine.targets[:600], None)
    assert (chosen.lag, chosen.log, chosen.chosen) == (0, None, "auto")
    assert "stationary" in chosen.reason


def test_auto_takes_the_log_of_compounding_growth() -> None:
    rng = np.random.default_rng(2)
    growth = 10 * np.exp(np.cumsum(rng.normal(0.02, 0.02, 150)))
    chosen = choose(growth[:, None], None)
    assert chosen.log == "log"
    assert chosen.lag == 1


def test_auto_differences_at_the_season_when_the_differences_repeat() -> None:
    t = np.arange(240)
    rng = np.random.default_rng(3)
    seasonal = 0.2 * t + 5 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.3, 240)
    chosen = choose(seasonal[:, None], 12)
    assert chosen.lag == 12


def test_log_refuses_a_non_positive_value_naming_the_row() -> None:
    y = _series(np.array([3.0, 2.0, 0.0, 5.0] * 5), "count")
    with pytest.raises(DataError, match=r"'count' > 0; row 3 has 0\.0"):
        check(parse("log", None), y)
    check(parse("log1p", None), y)  # zero is fine for log1p


def test_differencing_needs_the_targets_among_the_inputs() -> None:
    x = np.arange(40.0).reshape(-1, 1)
    s = Series("s", "0" * 64, ("x",), ("y",), x, x * 2)
    with pytest.raises(DataError, match="add 'y' to --features"):
        check(parse("diff", None), s)


def test_a_differenced_model_is_scored_in_levels(tmp_path: Path) -> None:
    """realgdp (statsmodels' macrodata): auto differences it; every figure is in levels."""
    from statsmodels.datasets import macrodata

    gdp = macrodata.load_pandas().data["realgdp"].to_numpy()
    csv = tmp_path / "gdp.csv"
    csv.write_text("realgdp\n" + "\n".join(f"{v:.3f}" for v in gdp) + "\n")
    series = load_csv(csv, ["realgdp"], ["realgdp"])
    trained = train(series, tiny_config("gru", test_rows=40, window=20, burn_in=2, epochs=3))
    assert trained.transform.lag == 1
    assert trained.transform.chosen == "auto"
    ev = trained.evaluation
    np.testing.assert_allclose(ev.actual, series.targets[-40:])
    np.testing.assert_allclose(ev.predictions["persistence"], series.targets[-41:-1])
    # A model predicting zero change would be persistence: the streaming errors are in
    # levels (the same order as persistence), not in differences.
    assert ev.metrics["streaming"]["rmse"] < 5 * ev.metrics["persistence"]["rmse"]
    assert trained.intervals is not None
    assert len(trained.intervals["widths"]) >= 5


def test_old_configs_read_as_untransformed() -> None:
    from training.config import legacy_config

    recorded = {
        k: v for k, v in tiny_config().to_dict().items() if k not in ("transform", "season")
    }
    assert legacy_config(recorded).transform == "none"
    assert TargetTransform().kind == "none"
