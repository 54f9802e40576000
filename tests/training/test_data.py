"""Synthetic series, CSV loading and validation, chronological split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import (
    DataError,
    Series,
    Split,
    auto_burn_in,
    auto_window,
    check_split,
    count_test_rows,
    load_csv,
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


def test_split_by_row_counts() -> None:
    assert split_series(1000, 0.2, 0.2, test_rows=100) == Split(720, 900, 1000)
    assert split_series(1000, 0.2, 0.2, test_rows=100, val_rows=50) == Split(850, 900, 1000)
    assert split_series(1000, 0.2, 0.2, val_rows=50) == Split(750, 800, 1000)


def test_check_split_needs_window_plus_one_training_rows() -> None:
    check_split("d", split_series(17, 0.2, 0.2), 10)  # train 11 = window + 1
    with pytest.raises(DataError) as info:
        check_split("d", split_series(16, 0.2, 0.2), 10)
    assert str(info.value) == (
        "d has 16 rows, split as train 10, validation 3, test 3; window 10 needs at least 11 "
        "training rows: the largest window that fits is 9"
    )


def test_the_yearly_series_of_the_issue_names_the_largest_window() -> None:
    with pytest.raises(DataError, match="the largest window that fits is 197"):
        check_split("years.csv", split_series(309, 0.2, 0.2), 200)


@pytest.mark.parametrize(
    ("rows", "test_rows", "val_rows"), [(10, 1, 8), (100, 99, None), (100, 10, 89)]
)
def test_check_split_refuses_empty_parts(rows: int, test_rows: int, val_rows: int | None) -> None:
    split = split_series(rows, 0.2, 0.2, test_rows, val_rows)
    with pytest.raises(DataError, match="test and validation need at least 1 row each"):
        check_split("d", split, 1)


@pytest.mark.parametrize("test_rows", [100, 120])
def test_a_test_part_as_long_as_the_series_is_refused(test_rows: int) -> None:
    with pytest.raises(DataError) as info:
        check_split("d", split_series(100, 0.2, 0.2, test_rows), 1)
    assert str(info.value) == f"d has 100 rows: a test part of {test_rows} leaves none to train on"


@pytest.mark.parametrize(
    ("rows", "window"), [(1000, 200), (640, 136), (309, 66), (100, 21), (12, 2), (5, 1)]
)
def test_auto_window_adapts_to_the_data(rows: int, window: int) -> None:
    split = split_series(rows, 0.2, 0.2)
    assert auto_window(split) == window
    if split.train_end >= 2:
        check_split("d", split, auto_window(split))  # always fits
    assert auto_burn_in(200) == 20
    assert 0 <= auto_burn_in(window) < window


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


def _timed(tmp_path: Path, times: list[str]) -> Series:
    text = "when,v\n" + "".join(f"{t},{i % 5}\n" for i, t in enumerate(times))
    return load_csv(_csv(tmp_path, text), ["v"], ["v"], time_column="when")


@pytest.mark.parametrize(
    ("times", "start", "test_rows"),
    [
        ([str(y) for y in range(1871, 1971)], "1951", 20),
        ([str(y) for y in range(1871, 1971)], "1950.5", 20),
        ([f"{1950 + m // 12}-{m % 12 + 1:02d}" for m in range(36)], "1952-01", 12),
        ([f"{1950 + m // 12}-{m % 12 + 1:02d}-01" for m in range(36)], "1951-12-15", 12),
        (["2024-03-30T22:00", "2024-03-31T01:00", "2024-03-31T04:00"], "2024-03-31", 2),
        (["2024-01-01T00:00+01:00", "2024-01-01T00:30+00:00"], "2023-12-31T23:15Z", 1),
    ],
    ids=["years", "between-years", "months", "dates", "hours", "time-zones"],
)
def test_test_start_counts_the_rows_from_it(
    tmp_path: Path, times: list[str], start: str, test_rows: int
) -> None:
    series = _timed(tmp_path, times)
    assert series.time_name == "when"
    assert series.times == tuple(times)
    assert count_test_rows(series, start) == test_rows


@pytest.mark.parametrize(
    ("times", "start", "message"),
    [
        (["1", "2", "3"], "2024-01-01", "--test-start '2024-01-01' is not a time like"),
        (["1", "2", "3"], "4", "is after the last row"),
        (["1", "2", "3"], "1", "is at or before the first row"),
        (["2024-01-01", "2024-01-02"], "2024-01-02T00:00Z", "mix times with and without"),
    ],
)
def test_test_start_outside_the_data_is_refused(
    tmp_path: Path, times: list[str], start: str, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        count_test_rows(_timed(tmp_path, times), start)


@pytest.mark.parametrize(
    ("times", "message"),
    [
        (["1", "3", "2"], "time column 'when' of .* is not increasing: '2' on line 4 follows '3'"),
        (["1", "1", "2"], "is not increasing"),
        (["1", "x", "2"], "has 'x' on line 3: expected a number or an ISO 8601 date/time"),
        (["1", "2024-01-01"], "mixes numbers and dates"),
        (["2024-01-01", "2024-01-02T00:00+00:00"], "mix times with and without a time zone"),
    ],
)
def test_bad_time_column_is_refused(tmp_path: Path, times: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        _timed(tmp_path, times)
