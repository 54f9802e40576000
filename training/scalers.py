"""Per-column affine scalers (min-max, standard), fitted on the training part only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from training.config import ScalerKind
from training.data import DataError


@dataclass(frozen=True)
class Scaler:
    """Maps original units to model units as (v - offset) / scale."""

    kind: ScalerKind
    offset: float  # min for minmax, mean for standard
    scale: float  # max - min for minmax, std for standard

    def transform(self, v: np.ndarray) -> np.ndarray:
        return (v - self.offset) / self.scale

    def inverse(self, v: np.ndarray) -> np.ndarray:
        return v * self.scale + self.offset

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "minmax":
            return {"kind": "minmax", "min": self.offset, "max": self.offset + self.scale}
        return {"kind": "standard", "mean": self.offset, "std": self.scale}


def fit_scaler(kind: ScalerKind, values: np.ndarray, column: str) -> Scaler:
    """Fit on a 1-D array; a constant column cannot be scaled and is refused by name."""
    if kind == "minmax":
        lo, hi = float(values.min()), float(values.max())
        scaler = Scaler("minmax", lo, hi - lo)
    else:
        scaler = Scaler("standard", float(values.mean()), float(values.std()))
    if not scaler.scale > 0.0:
        raise DataError(f"column {column!r} is constant in the training part: cannot scale it")
    return scaler


def scaler_from_dict(d: dict[str, Any]) -> Scaler:
    if d["kind"] == "minmax":
        return Scaler("minmax", float(d["min"]), float(d["max"]) - float(d["min"]))
    if d["kind"] == "standard":
        return Scaler("standard", float(d["mean"]), float(d["std"]))
    raise ValueError(f"unknown scaler kind {d['kind']!r}")


def fit_scalers(kind: ScalerKind, columns: dict[str, np.ndarray]) -> dict[str, Scaler]:
    """One scaler per named column (features and targets share a scaler when they share a name)."""
    return {name: fit_scaler(kind, v, name) for name, v in columns.items()}


def apply(scalers: dict[str, Scaler], names: tuple[str, ...], values: np.ndarray) -> np.ndarray:
    """Scale (N, C) values whose columns are `names`."""
    return np.stack([scalers[n].transform(values[:, j]) for j, n in enumerate(names)], axis=1)


def invert(scalers: dict[str, Scaler], names: tuple[str, ...], values: np.ndarray) -> np.ndarray:
    """Back to original units for (..., C) values whose last axis is `names`."""
    out = np.empty_like(values, dtype=np.float64)
    for j, n in enumerate(names):
        out[..., j] = scalers[n].inverse(values[..., j].astype(np.float64))
    return out
