"""Conformal widths (training/intervals.py) and the coverage bench's recomputation of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.interval_coverage import coverage, scores, wilson
from bench.interval_hstep import METHODS, cell_data, in_range_probability, sums
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


def test_comparison_bench_counts_exact_binomial_chances_and_sums_trailing_errors() -> None:
    # 15 of 16 is the only count in 90-98 %: P = 16 * 0.95 ** 15 * 0.05.
    assert in_range_probability(16, 0.95) == pytest.approx(16 * 0.95**15 * 0.05)
    assert in_range_probability(400, 0.8) > in_range_probability(40, 0.8)
    e1 = np.array([np.nan, 1.0, 2.0, -4.0, 8.0])
    np.testing.assert_array_equal(sums(e1, 1)[1:], e1[1:])
    np.testing.assert_array_equal(sums(e1, 3), [np.nan, np.nan, np.nan, -1.0, 6.0])


def test_comparison_bench_one_scale_gives_back_the_recorded_widths(nile_csv: Path) -> None:
    """The comparison's baseline is the recorded method: its widths per step, from the
    collected errors, are the manifest's."""
    series = load_csv(nile_csv, ["volume"], ["volume"])
    trained = train(series, tiny_config("gru", test_rows=20, refit=False, transform="diff"))
    block = trained.intervals
    assert block is not None
    data = cell_data(trained, trained)
    method = METHODS["one-scale"]
    train_end, val_end = int(data["train_end"]), int(data["val_end"])
    base = method.base(data["val_e1"], 1, train_end, val_end)
    np.testing.assert_allclose(base, block["base"][0], rtol=1e-6)
    scale = method.scale(data["val_e1"], 1, base)[data["val_origins"]]
    for h in (1, 5):
        err = data["val_errs"][:, h - 1]
        ok = np.isfinite(err)
        widths = conformal_widths(err[ok] / scale[ok])
        np.testing.assert_allclose(widths, np.asarray(block["widths"])[h - 1, 0], rtol=1e-5)
    # The per-step method's first step is the recorded one; its later steps differ.
    assert METHODS["per-step"].base(data["val_e1"], 1, train_end, val_end) == base
    assert METHODS["per-step"].base(data["val_e1"], 5, train_end, val_end) != base
