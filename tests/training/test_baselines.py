"""Forecasts by rolling origin: the naive baselines by hand, ARIMA by its own formula, the
model's rollout step by step, and the season from the time column."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from training import statistical
from training.baselines import (
    Span,
    choose_season,
    detect_season,
    forecast_table,
    model_paths,
    model_scores,
    naive_paths,
    score_paths,
    season_from_times,
    start_baselines,
)
from training.data import Series
from training.pipeline import Trained

Y = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0, 8.0])


def _series(values: np.ndarray, times: tuple[str, ...] | None = None) -> Series:
    col = values[:, None]
    return Series("tiny", "0" * 64, ("v",), ("v",), col, col.copy(), time_name="t", times=times)


def test_naive_paths_by_hand() -> None:
    y = Y[:, None]
    origins = np.array([5, 6])
    persistence = naive_paths(y, origins, 4, 1)[..., 0]
    assert persistence.tolist() == [[9.0] * 4, [2.0] * 4]
    # Season 3: rows o+1, o+2, o+3 repeat rows o-2, o-1, o; o+4 repeats o+1 - 3 = o - 2 + 3.
    seasonal = naive_paths(y, origins, 4, 3)[..., 0]
    assert seasonal.tolist() == [[1.0, 5.0, 9.0, 1.0], [5.0, 9.0, 2.0, 5.0]]


def test_rolling_origin_scores_by_hand() -> None:
    series = _series(Y)
    span = Span(series, 8, 12)  # rows 8..11 = 5, 3, 5, 8
    paths = naive_paths(series.targets, span.origins(2), 2, 1)
    scores = score_paths(paths, span, (1, 2))
    # 1 step: rows 7..10 predict 8..11: errors 6-5, 5-3, 3-5, 5-8.
    assert scores[1]["rmse"] == pytest.approx(np.sqrt((1 + 4 + 4 + 9) / 4))
    assert scores[1]["mae"] == pytest.approx((1 + 2 + 2 + 3) / 4)
    # 2 steps: rows 6..9 predict 8..11: errors 2-5, 6-3, 5-5, 3-8.
    assert scores[2]["rmse"] == pytest.approx(np.sqrt((9 + 9 + 0 + 25) / 4))


@pytest.mark.parametrize(
    ("times", "season"),
    [
        (("2020-01", "2020-02", "2020-03", "2020-04"), 12),
        (("2020-01-01", "2020-04-01", "2020-07-01", "2020-10-01"), 4),
        (("2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01"), 7),
        (("2024-01-01T00:00", "2024-01-01T01:00", "2024-01-01T02:00"), 24),
        (("2024-01-01", "2024-01-08", "2024-01-15", "2024-01-22"), 52),
        (("1871", "1872", "1873", "1874"), None),  # numbers: no calendar
        (("2000-01-01", "2001-01-01", "2002-01-01"), None),  # yearly: no season
    ],
    ids=["monthly", "quarterly", "daily", "hourly", "weekly", "numbers", "yearly"],
)
def test_season_from_the_time_column(times: tuple[str, ...], season: int | None) -> None:
    assert season_from_times(times) == season


def test_detected_season_and_its_absence() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(240)
    assert detect_season(np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.2, 240)) == 12
    assert detect_season(rng.normal(size=240)) is None
    assert detect_season(np.cumsum(rng.normal(size=240))) is None  # a random walk: no peak
    # --season wins over everything; then the time column; then detection.
    series = _series(
        np.sin(2 * np.pi * t / 12), tuple(f"{2000 + i // 4}-{3 * (i % 4) + 1:02d}" for i in t)
    )
    assert choose_season(series, 200, 5) == (5, "given (--season)")
    assert choose_season(series, 200, None)[0] == 4
    assert choose_season(replace(series, times=None), 200, None)[0] == 12


def test_model_paths_roll_forward_on_their_own_predictions(tiny_trained: Trained) -> None:
    model, t = tiny_trained.model, tiny_trained
    x = t.series.features[:, :].astype(np.float32)  # any inputs do: the rollout is the point
    origins = np.array([50, 80])
    paths = model_paths(model, x, origins, 3, np.array([0]))
    with torch.no_grad():
        for i, o in enumerate(origins):
            y, state = model(torch.from_numpy(x[None, : o + 1]))
            step, want = y[:, -1:], [float(y[0, -1, 0])]
            for _ in range(2):
                step, state = model(step, state)
                want.append(float(step[0, 0, 0]))
            assert paths[i, :, 0] == pytest.approx(want, abs=1e-5)


def test_one_step_is_the_streaming_figure(tiny_trained: Trained) -> None:
    t = tiny_trained
    span = Span(t.series, t.split.val_end, t.split.rows)
    scores, _ = model_scores(t.model, t.series, t.scalers, span, (1, 5))
    assert scores[1]["rmse"] == pytest.approx(t.evaluation.metrics["streaming"]["rmse"], rel=1e-5)
    assert scores[5]["rmse"] > 0


def test_arima_forecasts_follow_the_fitted_ar1_formula() -> None:
    rng = np.random.default_rng(1)
    y = np.empty(120)
    y[0] = 10.0
    for i in range(1, 120):
        y[i] = 10.0 + 0.7 * (y[i - 1] - 10.0) + rng.normal()
    from statsmodels.tsa.arima.model import ARIMA

    res = ARIMA(y[:100], order=(1, 0, 0), trend="c").fit()
    mean, phi = res.params[0], res.params[1]
    origins = np.array([100, 110])
    paths = statistical.paths_of(res, y, origins, 3)
    assert paths is not None
    for i, o in enumerate(origins):  # fixed parameters, the data up to the origin
        want = [mean + phi**h * (y[o] - mean) for h in (1, 2, 3)]
        assert paths[i] == pytest.approx(want, rel=1e-6)


def test_statistical_baselines_fit_and_name_their_order() -> None:
    t = np.arange(48)
    y = (10 + 3 * np.sin(2 * np.pi * t / 4) + np.random.default_rng(2).normal(0, 0.3, 48))[:, None]
    out = statistical.forecast(y, 40, np.arange(35, 47), 5, 1)  # seasonal orders: too slow
    assert set(out.paths) == {"arima", "ets"}, out.notes
    assert out.labels["arima"].startswith("ARIMA(")
    assert out.paths["arima"].shape == (12, 5, 1)
    assert np.isfinite(out.paths["ets"]).all()
    # A cycle of 4: an AR(2) holds it, and beats persistence by far.
    origins = np.arange(35, 47)
    persistence = naive_paths(y, origins, 5, 1)
    inside = origins + 5 < 48
    actual = y[origins[inside, None] + np.arange(1, 6)]  # (n, 5, 1)
    err = np.abs(out.paths["arima"][inside] - actual)
    naive_err = np.abs(persistence[inside] - actual)
    assert err.mean() < 0.5 * naive_err.mean()


def test_without_statsmodels_the_statistical_baselines_are_skipped_with_a_note(
    tiny_trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.baselines as baselines

    monkeypatch.setattr(baselines, "statistical_available", lambda: False)
    t = tiny_trained
    b = start_baselines(t.series, t.fitted_rows, t.split.val_end, season=None)
    table = forecast_table(b, t.model, t.scalers)
    assert set(table["horizons"]["1"]) == {"seqcast", "persistence", "seasonal_naive"}
    assert any("statsmodels is not installed" in n for n in table["notes"])


def test_forecast_table_in_levels_beside_every_baseline(tiny_trained: Trained) -> None:
    t = tiny_trained
    b = start_baselines(t.series, t.fitted_rows, t.split.val_end, season=63, background=False)
    table = forecast_table(b, t.model, t.scalers)
    assert set(table["horizons"]) == {"1", "5"}
    assert set(table["horizons"]["5"]) == {
        "seqcast",
        "persistence",
        "seasonal_naive",
        "arima",
        "ets",
    }
    persistence = table["horizons"]["1"]["persistence"]
    assert persistence == pytest.approx(t.evaluation.metrics["persistence"])
    assert table["rows"] == {"first": t.split.val_end, "count": t.split.n_test}
    assert (table["season"], table["baselines_fitted_on"]) == (63, t.fitted_rows)


def test_a_differenced_model_is_scored_in_levels(sine: Series) -> None:
    from tests.training.conftest import tiny_config
    from training.pipeline import train

    trend = replace(sine, targets=sine.targets + np.arange(sine.rows)[:, None] * 0.05)
    trend = replace(trend, features=trend.targets.copy(), clean_targets=None)
    t = train(trend, tiny_config("gru", transform="diff"))
    assert t.transform.lag == 1
    span = Span(trend, t.split.val_end, t.split.rows)
    scores, _ = model_scores(t.model, trend, t.scalers, span, (1, 5), t.transform)
    assert scores[1]["rmse"] == pytest.approx(t.evaluation.metrics["streaming"]["rmse"], rel=1e-5)
    b = start_baselines(trend, t.fitted_rows, t.split.val_end, statistical=False)
    table = forecast_table(b, t.model, t.scalers, t.transform)
    assert table["horizons"]["1"]["seqcast"] == pytest.approx(scores[1])
    assert table["horizons"]["5"]["seqcast"]["rmse"] == pytest.approx(scores[5]["rmse"])
