"""Synthetic series, CSV loading and validation, chronological split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import (
    DataError,
    Series,
    Split,
    load_csv,
    min_rows,
    split_series,
    synthetic_sine,
)


def test_synthetic_sine_matches_the_process(sine: Series) -> None:
    assert sine.rows == 1000
    t = np.arange(0.0, 100.0, 0.1)
    assert sine.clean_targets is not None
    np.testing.assert_allclose(sine.clean_targets[:, 0], np.sin(t))
    noise = sine.targets[:, 0] - np.sin(t)
    assert 0.45 < noise.std() < 0.55
    assert abs(noise.mean()) < 0.05
    np.testing.assert_array_equal(sine.features, sine.targets)


def test_synthetic_sine_is_seeded(sine: Series) -> None:
    again, other = synthetic_sine(42), synthetic_sine(43)
    np.testing.assert_array_equal(again.features, sine.features)
    assert again.sha256 == sine.sha256
    assert other.sha256 != sine.sha256
    assert not np.allclose(other.features, sine.features)


def test_split_is_chronological_with_test_last() -> None:
    s = split_series(1000, val_fraction=0.2, test_fraction=0.2)
    assert (s.train_end, s.val_end, s.n_test) == (640, 800, 200)


def test_min_rows_leaves_a_training_part_longer_than_the_window() -> None:
    assert min_rows(10, 0.2, 0.2) == 17
    assert split_series(17, 0.2, 0.2) == Split(train_end=11, val_end=14, rows=17)
    assert split_series(16, 0.2, 0.2).train_end == 10  # one row short of window + 1


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def test_load_csv_picks_feature_and_target_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path, "t,a,b,c\n0,1,2,3\n1,4,5,6\n2,7,8,9\n")
    s = load_csv(path, ["c", "a"], ["b"])
    assert s.feature_names == ("c", "a")
    assert s.target_names == ("b",)
    np.testing.assert_array_equal(s.features, [[3, 1], [6, 4], [9, 7]])
    np.testing.assert_array_equal(s.targets, [[2], [5], [8]])
    assert s.name == "data.csv"
    assert len(s.sha256) == 64


@pytest.mark.parametrize(
    ("text", "features", "message"),
    [
        ("a,b\n1,2\n", ["a", "zz"], "column(s) 'zz' not in the header"),
        ("a,b\n1,2\n3,\n5,6\n", ["a", "b"], "missing values in column 'b' on line(s) 3"),
        ("a,b\n1,2\nnan,4\n", ["a", "b"], "missing values in column 'a' on line(s) 3"),
        ("a,b\n1,2\n3,abc\n", ["a", "b"], "column 'b' has non-numeric value 'abc' on line 3"),
        ("a,b\n1,2\n3,inf\n", ["a", "b"], "column 'b' has non-finite value 'inf' on line 3"),
        ("a,b\n1,2\n3\n", ["a", "b"], "line 3 of"),
        ("", ["a"], "is empty"),
    ],
)
def test_bad_csv_is_refused_with_a_reason(
    tmp_path: Path, text: str, features: list[str], message: str
) -> None:
    with pytest.raises(DataError) as info:
        load_csv(_csv(tmp_path, text), features, features)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        load_csv(tmp_path / "absent.csv", ["a"], ["a"])


@pytest.mark.parametrize(
    ("fill", "expected"),
    [("ffill", [1.0, 1.0, 3.0, 3.0]), ("zero", [1.0, 0.0, 3.0, 0.0])],
)
def test_fill_is_explicit(tmp_path: Path, fill: str, expected: list[float]) -> None:
    path = _csv(tmp_path, "a\n1\n\n3\nNaN\n")
    s = load_csv(path, ["a"], ["a"], fill=fill)  # type: ignore[arg-type]
    np.testing.assert_array_equal(s.features[:, 0], expected)


def test_ffill_cannot_fill_a_leading_gap(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="starts with a missing value"):
        load_csv(_csv(tmp_path, "a\n\n2\n"), ["a"], ["a"], fill="ffill")
