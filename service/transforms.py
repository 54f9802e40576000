"""A model's target transform on the serving side (manifest `transform`, training/transforms.py).

The model works in transformed units: z = log(y) (or log1p, or y itself), then differences
d[t] = z[t] - z[t - lag]. A stream keeps the last `lag` observed target values (`levels`,
original units, float32 as the service received them) so that the first value of the next
call can be differenced and every prediction rebuilt in levels: the state carries them.

A fresh stream's first `lag` values have nothing to difference from: they only fill the
levels, the model does not step on them, and their predictions are null (NaN).

ErrorScale: the running scale of normalized-conformal intervals (service/intervals.py),
carried in the state beside the levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from training.manifest import Manifest, TargetTransform

if TYPE_CHECKING:
    from service.inference import SeriesInput, SeriesOutput


@dataclass(frozen=True, slots=True)
class Prepared:
    """One series' values in model units, and what rebuilding levels needs."""

    model_values: np.ndarray  # (m, F) float64: the values the model steps on (m may be 0)
    z: np.ndarray  # (k + T, O) float64: levels then values, log taken (targets only)
    skipped: int  # values at the start with no model step (T - m)
    levels: np.ndarray | None  # (<= lag, O) float32: the state's levels after the values


class StreamTransform:
    """The transform of one model, applied to a stream chunk by chunk."""

    def __init__(self, manifest: Manifest, transform: TargetTransform) -> None:
        self.lag = transform.lag
        self.log = transform.log
        self.kind = transform.kind
        self.targets = len(manifest.targets)
        # Input columns that are targets (transformed as inputs), and where each target is.
        self.input_cols = [j for j, f in enumerate(manifest.features) if f in manifest.targets]
        self.target_cols = [
            manifest.features.index(t) if t in manifest.features else -1 for t in manifest.targets
        ]
        self.names = list(manifest.targets)

    def log_of(self, y: np.ndarray) -> np.ndarray:
        if self.log == "log":
            return np.log(y)  # type: ignore[no-any-return]
        if self.log == "log1p":
            return np.log1p(y)  # type: ignore[no-any-return]
        return y

    def exp_of(self, z: np.ndarray) -> np.ndarray:
        if self.log == "log":
            return np.exp(z)  # type: ignore[no-any-return]
        if self.log == "log1p":
            return np.maximum(np.expm1(z), 0.0)  # type: ignore[no-any-return]
        return z

    def prepare(self, values: np.ndarray, levels: np.ndarray | None) -> Prepared:
        """Values (T, F) in original units after the state's levels (k, O) -> model units."""
        raw = values.astype(np.float64)
        if self.lag == 0:
            x = raw.copy()
            x[:, self.input_cols] = self.log_of(raw[:, self.input_cols])
            z = x[:, self.target_cols] if all(c >= 0 for c in self.target_cols) else x[:, :0]
            return Prepared(x, z, 0, None)
        observed = raw[:, self.target_cols]  # targets are inputs when differenced
        prior = np.empty((0, self.targets)) if levels is None else levels.astype(np.float64)
        full = np.concatenate([prior, observed])  # (k + T, O)
        z = self.log_of(full)
        total, steps = full.shape[0], values.shape[0]
        m = max(0, total - self.lag)
        skipped = steps - min(m, steps)
        x = raw[skipped:].copy()
        if m:
            diffs = z[self.lag :] - z[: -self.lag]  # (total - lag, O)
            x[:, self.target_cols] = diffs[-x.shape[0] :]
        kept = full[-self.lag :].astype(np.float32)
        return Prepared(x, z, skipped, kept)

    def predictions(self, prepared: Prepared, predicted: np.ndarray) -> np.ndarray:
        """One-step predictions (m, O) in model units -> (T, O) in levels, NaN where skipped."""
        steps = prepared.skipped + predicted.shape[0]
        out = np.full((steps, self.targets), np.nan, dtype=np.float64)
        if predicted.shape[0] == 0:
            return out
        if self.lag == 0:
            out[prepared.skipped :] = self.exp_of(predicted.astype(np.float64))
            return out
        z = prepared.z
        # The prediction after full row i adds to z[i + 1 - lag]; the stepped rows are the
        # last m rows of z.
        m = predicted.shape[0]
        base = z[z.shape[0] - m + 1 - self.lag : z.shape[0] + 1 - self.lag]  # (m, O)
        out[prepared.skipped :] = self.exp_of(base + predicted)
        return out

    def forecast(self, prepared: Prepared, predicted: np.ndarray) -> np.ndarray:
        """Forecast steps (H, O) in model units after the last value -> levels."""
        if self.lag == 0:
            return self.exp_of(predicted.astype(np.float64))
        path = np.concatenate([prepared.z[-self.lag :], np.empty_like(predicted, np.float64)])
        for h in range(predicted.shape[0]):
            path[self.lag + h] = path[h] + predicted[h]
        return self.exp_of(path[self.lag :])


# The largest mean square a state keeps: float32's largest finite value, rounded down.
_M_MAX = 3.0e38


class ErrorScale:
    """The running scale of one model's normalized-conformal intervals.

    A stream's scale state is (2, targets) float32: row 0 the mean square m, row 1 the last
    one-step prediction in the widths' units (NaN: none yet, as for a fresh stream).
    """

    def __init__(self, manifest: Manifest) -> None:
        calibrated = manifest.intervals
        assert calibrated is not None
        assert calibrated.decay is not None
        assert calibrated.base is not None
        self.decay = calibrated.decay
        self.base = np.asarray(calibrated.base, dtype=np.float64)  # (O,)
        self.space = calibrated.space
        # Where each target is among the inputs (the manifest checks every target is one).
        self.cols = [manifest.features.index(t) for t in manifest.targets]

    def fresh(self) -> np.ndarray:
        """A fresh stream's state: m at the base, no prediction yet."""
        out = np.empty((2, self.base.shape[0]), dtype=np.float32)
        out[0] = self.base
        out[1] = np.nan
        return out

    def units(self, y: np.ndarray) -> np.ndarray:
        """Values in the widths' units (the log for a log transform)."""
        with np.errstate(divide="ignore", invalid="ignore"):  # a log1p model's 0: fine
            if self.space == "log":
                return np.log(y)  # type: ignore[no-any-return]
            if self.space == "log1p":
                return np.log1p(y)  # type: ignore[no-any-return]
        return y

    def update(
        self, state: np.ndarray | None, values: np.ndarray, predictions: np.ndarray
    ) -> np.ndarray:
        """The state after values (T, F) and their one-step predictions (T, O) in levels
        (NaN where none): each value scored against the prediction made before it."""
        prior = self.fresh() if state is None else state
        after: np.ndarray = self.update_batch(prior[None], values[None], predictions[None])[0]
        return after

    def update_all(self, inputs: Sequence[SeriesInput], results: Sequence[SeriesOutput]) -> None:
        """Set each result's scale state: series of one length updated together."""
        if len(inputs) == 1:
            s, out = inputs[0], results[0]
            out.scale = self.update(s.scale, s.values, out.predictions)
            return
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (s, out) in enumerate(zip(inputs, results, strict=True)):
            key = (s.values.shape[0], out.predictions.shape[0])
            groups.setdefault(key, []).append(i)
        for indices in groups.values():
            priors = [inputs[i].scale for i in indices]
            prior = np.stack([self.fresh() if p is None else p for p in priors])
            values = np.stack([inputs[i].values for i in indices])
            predictions = np.stack([results[i].predictions for i in indices])
            states = self.update_batch(prior, values, predictions)
            for b, i in enumerate(indices):
                results[i].scale = states[b]

    def update_batch(
        self, prior: np.ndarray, values: np.ndarray, predictions: np.ndarray
    ) -> np.ndarray:
        """`update` for B series of one length at once: prior (B, 2, O), values (B, T, F),
        predictions (B, T, O); the states (B, 2, O)."""
        actual = self.units(values[:, :, self.cols].astype(np.float64))  # (B, T, O)
        pred = self.units(predictions.astype(np.float64))  # (B, T, O)
        before = np.concatenate([prior[:, 1:2].astype(np.float64), pred[:, :-1]], axis=1)
        err = actual - before
        valid = np.isfinite(err)
        # m = d^n m0 + sum over the n errors (1 - d) d^(later errors) e^2, in one pass.
        later = np.cumsum(valid[:, ::-1], axis=1)[:, ::-1] - valid  # valid errors after
        d = self.decay
        weights = np.where(valid, (1.0 - d) * d ** later.astype(np.float64), 0.0)
        n = valid.sum(axis=1)  # (B, O)
        m = d**n * prior[:, 0] + (weights * np.where(valid, err, 0.0) ** 2).sum(axis=1)
        out = np.empty(prior.shape, dtype=np.float32)
        out[:, 0] = np.minimum(m, _M_MAX)  # finite in float32 (and in JSON), whatever came
        out[:, 1] = pred[:, -1] if pred.shape[1] else prior[:, 1]
        return out

    def scale(self, state: np.ndarray) -> np.ndarray:
        """sqrt(base + m) (O,): what the widths are multiplied by."""
        return np.sqrt(self.base + state[0].astype(np.float64))  # type: ignore[no-any-return]
