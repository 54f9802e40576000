"""Dated rows: frequency inference, the time grid, gap filling and calendar features."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from training.calendar import calendar_features, default_calendar, grid, infer_freq
from training.data import DataError, load_csv
from training.manifest import TimeSpec


def _csv(tmp_path: Path, times: list[str], values: list[str] | None = None) -> Path:
    values = values or [str(i + 1) for i in range(len(times))]
    path = tmp_path / "dated.csv"
    rows = [f"{t},{v}" for t, v in zip(times, values, strict=True)]
    path.write_text("when,value\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("times", "freq"),
    [
        (["2024-01-01", "2024-02-01", "2024-03-01"], "1MS"),
        (["2023-12-31", "2024-01-31", "2024-02-29", "2024-03-31"], "1ME"),  # a leap day
        (["1959-01-01", "1959-04-01", "1959-07-01", "1960-01-01"], "3MS"),  # a gap
        (["2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01"], "1D"),
        (["2024-01-01T00:00", "2024-01-01T01:00", "2024-01-01T03:00"], "1h"),
        (["2024-01-01T00:00", "2024-01-01T00:15", "2024-01-01T00:45"], "15min"),
    ],
    ids=["months", "month-ends-leap-day", "quarters", "days-leap-day", "hours", "minutes"],
)
def test_the_frequency_is_inferred(times: list[str], freq: str) -> None:
    assert infer_freq([datetime.fromisoformat(t) for t in times]) == freq


def test_a_daily_series_keeps_local_midnight_across_a_dst_change() -> None:
    # Berlin springs forward on 2024-03-31: that day has 23 hours.
    stamps = ["2024-03-30T00:00+01:00", "2024-03-31T00:00+01:00", "2024-04-01T00:00+02:00"]
    spec, positions = grid(
        "when", [datetime.fromisoformat(s) for s in stamps], None, "Europe/Berlin"
    )
    assert spec.freq == "1D"
    assert positions.tolist() == [0, 1, 2]
    assert spec.stamp(3).isoformat() == "2024-04-02T00:00:00+02:00"


def test_an_hourly_series_steps_over_the_missing_hour_of_a_dst_change() -> None:
    spec = TimeSpec(
        column="when", freq="1h", anchor="2024-03-31T00:00:00+01:00", tz="Europe/Berlin"
    )
    shown = [s.isoformat() for s in spec.stamps(0, 4)]
    assert shown == [
        "2024-03-31T00:00:00+01:00",
        "2024-03-31T01:00:00+01:00",
        "2024-03-31T03:00:00+02:00",
        "2024-03-31T04:00:00+02:00",
    ]
    assert [spec.index(datetime.fromisoformat(s)) for s in shown] == [0, 1, 2, 3]
    # The same instant written in UTC is the same position; half past is no position.
    assert spec.index(datetime.fromisoformat("2024-03-31T01:00:00+00:00")) == 2
    assert spec.index(datetime.fromisoformat("2024-03-31T01:30:00+00:00")) is None
    with pytest.raises(ValueError, match="with a UTC offset"):
        spec.index(datetime(2024, 3, 31, 5))


def test_monthly_positions_cross_a_year_and_a_leap_day() -> None:
    spec = TimeSpec(column="when", freq="1ME", anchor="2023-11-30")
    assert [s.date().isoformat() for s in spec.stamps(2, 3)] == [
        "2024-01-31",
        "2024-02-29",
        "2024-03-31",
    ]
    assert spec.index(datetime(2024, 2, 29)) == 3
    assert spec.index(datetime(2024, 2, 28)) is None


@pytest.mark.parametrize(
    ("fill", "filled"),
    [
        ("interpolate", [1.0, 2.0, 3.0, 4.0]),
        ("ffill", [1.0, 2.0, 2.0, 4.0]),
        ("zero", [1, 2, 0, 4]),
    ],
)
def test_rows_missing_from_the_grid_are_inserted_and_filled(
    tmp_path: Path, fill: str, filled: list[float]
) -> None:
    path = _csv(tmp_path, ["2024-01-01", "2024-02-01", "2024-04-01"], ["1", "2", "4"])
    series = load_csv(path, ["value"], ["value"], fill, "when")  # type: ignore[arg-type]
    assert series.features[:, 0].tolist() == filled
    assert series.times == ("2024-01-01", "2024-02-01", "2024-03-01T00:00:00", "2024-04-01")
    assert series.filled == {
        "freq": "1MS",
        "fill": fill,
        "missing_rows": 1,
        "filled_cells": {"value": 1},
        "first_missing": "2024-03-01T00:00:00",
    }


def test_missing_rows_without_a_fill_are_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["2024-01-01", "2024-02-01", "2024-04-01"])
    with pytest.raises(DataError, match=r"1 row\(s\) missing from the 1MS grid.*2024-03-01"):
        load_csv(path, ["value"], ["value"], None, "when")


def test_a_stamp_off_the_given_frequency_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["2024-01-01", "2024-01-02", "2024-01-02T12:00"])
    with pytest.raises(DataError, match=r"2024-01-02T12:00:00 \(row 3\).*not on the 1D grid"):
        load_csv(path, ["value"], ["value"], None, "when", freq="1D")


def test_calendar_inputs_need_a_named_zone_when_offsets_change(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["2024-03-31T00:00+01:00", "2024-03-31T03:00+02:00"])
    with pytest.raises(DataError, match="--tz"):
        load_csv(path, ["value"], ["value"], None, "when", calendar=["hour"])
    series = load_csv(
        path, ["value"], ["value"], None, "when", tz="Europe/Berlin", calendar=["hour"]
    )
    assert series.time is not None
    assert series.time.freq == "2h"
    # Local hours 0 and 3, two hours apart (23:00 and 01:00 UTC), as sin/cos pairs.
    assert series.feature_names == ("value", "hour_sin", "hour_cos")
    np.testing.assert_allclose(series.features[:, 1], [0.0, math.sin(2 * math.pi * 3 / 24)])


def test_calendar_features_of_a_month_boundary_and_a_leap_day() -> None:
    stamps = [datetime(2024, 1, 31), datetime(2024, 2, 1), datetime(2024, 2, 29)]
    got = calendar_features(stamps, ["month", "dayofmonth", "dayofyear"])
    phases = np.array(
        [[0 / 12, 30 / 31, 30 / 366], [1 / 12, 0 / 29, 31 / 366], [1 / 12, 28 / 29, 59 / 366]]
    )
    want = np.stack([np.sin(2 * np.pi * phases), np.cos(2 * np.pi * phases)], axis=2)
    np.testing.assert_allclose(got, want.reshape(3, 6), atol=1e-12)


def test_a_constant_calendar_feature_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path, ["2024-01-01", "2024-01-02", "2024-01-03"])
    with pytest.raises(DataError, match="calendar feature 'hour' is constant at frequency 1D"):
        load_csv(path, ["value"], ["value"], None, "when", calendar=["hour"])


def test_train_reports_the_grid_what_was_filled_and_test_values_far_out(tmp_path: Path) -> None:
    """A trending quarterly series (macrodata's cpi) with a gap, dated from year and quarter:
    its test span lies far above the training range, and the run says so."""
    import json
    import subprocess
    import sys

    from statsmodels.datasets import macrodata

    data = macrodata.load_pandas().data
    rows = [
        f"{int(y)}-{3 * int(q) - 2:02d}-01,{c:.3f}"
        for y, q, c in zip(data["year"], data["quarter"], data["cpi"], strict=True)
    ]
    del rows[20]  # a missing quarter
    (tmp_path / "cpi.csv").write_text("date,cpi\n" + "\n".join(rows) + "\n")
    args = ["--csv", "cpi.csv", "--features", "cpi", "--time-column", "date"]
    args += ["--calendar", "quarter", "--fill", "interpolate", "--transform", "none"]
    args += ["--range-k", "0.25", "--search-budget", "0"]
    args += ["--hidden-size", "4", "--window", "10", "--burn-in", "2", "--epochs", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "training", "train", *args, "--no-progress", "--out", "repo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "time: date every 3MS, calendar inputs quarter" in out
    assert "filled (interpolate): 1 row(s) missing from the grid; cells filled: cpi 1" in out
    assert "test values of 'cpi' lie more than 0.25 std outside the training range" in out
    version = tmp_path / "repo" / "cpi-lstm" / "1"
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["features"] == ["cpi", "quarter_sin", "quarter_cos"]
    assert manifest["time"]["freq"] == "3MS"
    assert manifest["training"]["dataset"]["filled"]["missing_rows"] == 1
    metrics = json.loads((version / "report" / "metrics.json").read_text())
    (far,) = metrics.values()
    assert far["out_of_range"]["columns"]["cpi"]["count"] > 0
    assert (version / "report" / "forecast.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("freq", "name"),
    [
        ("1MS", "month"),
        ("1ME", "month"),
        ("3MS", "quarter"),
        ("1D", "dayofweek"),
        ("1h", "hour"),
        ("12MS", None),  # yearly: no cycle
        ("2D", None),
        ("15min", None),
    ],
)
def test_the_default_calendar_is_the_cycle_of_the_frequency(freq: str, name: str | None) -> None:
    assert default_calendar(freq) == name
