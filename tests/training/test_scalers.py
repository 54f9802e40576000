"""Scalers: exact round trip, manifest form, fitted on the training rows only."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import DataError, Series
from training.pipeline import prepare
from training.scalers import fit_scaler, scaler_from_dict

from .conftest import tiny_config


@pytest.mark.parametrize("kind", ["minmax", "standard"])
def test_round_trip_and_manifest_form(kind: str) -> None:
    v = np.random.default_rng(0).normal(3.0, 2.0, size=500)
    s = fit_scaler(kind, v, "v")  # type: ignore[arg-type]
    np.testing.assert_allclose(s.inverse(s.transform(v)), v, rtol=0, atol=1e-12)
    again = scaler_from_dict(s.to_dict())
    np.testing.assert_allclose(again.transform(v), s.transform(v), atol=1e-12)
    scaled = s.transform(v)
    if kind == "minmax":
        assert s.to_dict().keys() == {"kind", "min", "max"}
        assert scaled.min() == pytest.approx(0.0)
        assert scaled.max() == pytest.approx(1.0)
    else:
        assert s.to_dict().keys() == {"kind", "mean", "std"}
        assert scaled.mean() == pytest.approx(0.0, abs=1e-12)
        assert scaled.std() == pytest.approx(1.0)


def test_constant_column_is_refused_by_name() -> None:
    with pytest.raises(DataError, match="column 'flat' is constant"):
        fit_scaler("standard", np.ones(10), "flat")


@pytest.mark.parametrize("kind", ["minmax", "standard"])
def test_scalers_see_only_the_training_rows(kind: str) -> None:
    ramp = np.arange(100.0)[:, None]  # later rows are larger: the test part is out of range
    series = Series("ramp", "0" * 64, ("v",), ("v",), ramp, ramp.copy())
    # Untransformed: the auto transform would difference the ramp.
    split, scalers = prepare(series, tiny_config(scaler=kind, transform="none"))
    assert split.train_end == 64
    d = scalers["v"].to_dict()
    if kind == "minmax":
        assert (d["min"], d["max"]) == (0.0, 63.0)
    else:
        assert d["mean"] == pytest.approx(31.5)
        assert d["std"] == pytest.approx(np.arange(64.0).std())
