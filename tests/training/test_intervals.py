"""Conformal widths (training/intervals.py) and the coverage bench's recomputation of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.interval_coverage import coverage, scores, wilson
from tests.training.conftest import tiny_config
from training.data import load_csv
from training.intervals import GRID, conformal_widths
from training.pipeline import train


def test_widths_take_the_finite_sample_rank_and_stop_at_the_largest_error() -> None:
    errors = np.array([-9.0, 1.0, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0])  # |e|: 1 .. 9
    widths = conformal_widths(errors)
    at = {float(p): float(w) for p, w in zip(GRID, widths, strict=True)}
    assert at[0.0] == 0.0
    assert at[0.5] == 5.0  # ceil(10 * 0.5) = 5th smallest
    assert at[0.8] == 8.0  # ceil(10 * 0.8) = 8th
    assert at[0.95] == 9.0  # ceil(9.5) = 10 > 9: the largest
    assert np.all(np.diff(widths) >= 0.0)


def test_wilson_range_holds_the_share_and_narrows_with_more_rows() -> None:
    low, high = wilson(0.8, 40)
    assert low < 0.8 < high
    low_many, high_many = wilson(0.8, 400)
    assert low < low_many < 0.8 < high_many < high


def test_bench_scores_on_the_validation_span_give_back_the_calibrated_widths(
    nile_csv: Path,
) -> None:
    """The diagnosis recomputes calibrate's scores exactly: the validated model's scores on
    the validation span give the manifest's widths, and cover each level there."""
    series = load_csv(nile_csv, ["volume"], ["volume"])
    trained = train(series, tiny_config("gru", test_rows=20, refit=False, transform="diff"))
    block = trained.intervals
    assert block is not None
    assert block["method"] == "normalized-conformal"
    lag = trained.transform.lag
    span = (trained.split.train_end - lag, trained.split.val_end - lag)
    actual, pred, scale = scores(trained, block, (1,), span)[1]
    widths = conformal_widths((actual - pred) / scale)
    np.testing.assert_allclose(widths, np.asarray(block["widths"])[0, 0], rtol=1e-6)
    # On the test span the shares are what the bench reports, within [0, 1].
    cov = coverage(trained, block, (1,), (0.8, 0.95))
    for share, n in cov.values():
        assert 0.0 <= share <= 1.0
        assert n == 20
    # On its own calibration span a level's interval covers at least that share.
    for p in (0.8, 0.95):
        w = np.interp(p, GRID, widths) * scale
        assert np.mean(np.abs(actual - pred) <= w * (1 + 1e-9)) >= p
