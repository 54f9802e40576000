"""One training run end to end in memory: split, scale, fit, refit, evaluate.

Writing is export's job. The epochs are chosen on the validation rows; then, unless the
config turns it off, the model is trained again from the same initialisation on training
plus validation for that many epochs, so it has seen the rows nearest the test span.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from training import transforms
from training.config import TrainConfig
from training.data import Series, Split, check_split, split_series
from training.evaluate import Evaluation, evaluate, evaluate_validation, torch_runner
from training.fit import FitResult, Rollout, fit, make_reproducible, refit, resolve_device
from training.manifest import TargetTransform
from training.models import Forecaster
from training.scalers import Scaler, apply, fit_scalers


@dataclass(frozen=True)
class Trained:
    """A fitted model (back on the CPU) and everything needed to describe it."""

    model: Forecaster
    config: TrainConfig
    series: Series  # as read, in original units
    split: Split  # of `series`
    scalers: dict[str, Scaler]  # fitted on the rows the final model was trained on
    history: FitResult  # the run on the training rows, validated: it chose the epochs
    evaluation: Evaluation
    refit: FitResult | None = None  # the run on training + validation, when there was one
    transform: TargetTransform = field(default_factory=lambda: TargetTransform())  # identity: none
    # Conformal interval widths from validation (training.intervals); None: not calibrated.
    intervals: dict[str, Any] | None = None
    # How the model was chosen (training.search), when a search chose it: the manifest's
    # training.search block.
    search: dict[str, Any] | None = None

    @property
    def fitted_rows(self) -> int:
        """Rows [0, fitted_rows) of `series` the final model was trained on."""
        return self.split.val_end if self.refit is not None else self.split.train_end

    @property
    def model_series(self) -> Series:
        """The series in model units (transformed): row i is row i + lag of `series`."""
        return transforms.apply(self.transform, self.series)


def make_split(series: Series, config: TrainConfig) -> Split:
    """The config's chronological split of the series, checked against its window."""
    split = split_series(
        series.rows, config.val_fraction, config.test_fraction, config.test_rows, config.val_rows
    )
    check_split(series.name, split, config.window)
    return split


def _scalers(series: Series, config: TrainConfig, rows: int) -> dict[str, Scaler]:
    """One scaler per column, fitted on rows [0, rows) only."""
    part = slice(0, rows)
    columns = {n: series.features[part, j] for j, n in enumerate(series.feature_names)}
    for j, n in enumerate(series.target_names):
        columns.setdefault(n, series.targets[part, j])
    return fit_scalers(config.scaler, columns)


def shifted(split: Split, lag: int) -> Split:
    """The split of the transformed series, whose first `lag` rows have no difference."""
    return Split(split.train_end - lag, split.val_end - lag, split.rows - lag)


def model_data(series: Series, config: TrainConfig) -> tuple[Split, TargetTransform, Series, Split]:
    """The split, the transform (chosen from the training rows only when "auto"), and the
    series and split in model units, all checked (DataError)."""
    split = split_series(
        series.rows, config.val_fraction, config.test_fraction, config.test_rows, config.val_rows
    )
    if split.train_end < 2:
        check_split(series.name, split, config.window)  # names the parts, refuses
    transform = resolve_transform(series, config, split)
    transforms.check(transform, series)
    if transform.lag == 0 and transform.log is None:
        check_split(series.name, split, config.window)
        return split, transform, series, split
    model_split = shifted(split, transform.lag)
    name = (
        series.name if transform.lag == 0 else f"{series.name} (differenced at lag {transform.lag})"
    )
    check_split(name, model_split, config.window)
    return split, transform, transforms.apply(transform, series), model_split


def resolve_transform(series: Series, config: TrainConfig, split: Split) -> TargetTransform:
    """The config's transform; "auto" looks at the training rows [0, split.train_end) only."""
    train_targets = series.targets[: split.train_end]
    return transforms.resolve(config.transform, config.season, train_targets)


def prepare(series: Series, config: TrainConfig) -> tuple[Split, dict[str, Scaler]]:
    """Split chronologically (checked) and fit scalers on the training rows only (in the
    model's units, after the transform)."""
    split, _, model_series, model_split = model_data(series, config)
    return split, _scalers(model_series, config, model_split.train_end)


def _new_model(series: Series, config: TrainConfig, device: torch.device) -> Forecaster:
    """A freshly initialised forecaster: the same weights for the same seed."""
    make_reproducible(config, device)
    return Forecaster(
        cell=config.cell,
        input_size=len(series.feature_names),
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout,
        output_size=len(series.target_names),
    ).to(device)


def _tensors(
    series: Series, scalers: dict[str, Scaler], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled inputs (N, F) and targets (N, O), float32, on the device."""
    x = apply(scalers, series.feature_names, series.features).astype(np.float32)
    y = apply(scalers, series.target_names, series.targets).astype(np.float32)
    return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)


def make_rollout(
    mseries: Series,
    config: TrainConfig,
    transform: TargetTransform,
    rows: int,
    device: torch.device,
) -> Rollout | None:
    """The config's multi-step training on rows [0, rows) of `mseries`, or None: one step
    only, targets not differenced, an input that is not a target (nothing to feed back), or
    too few rows.

    Only differenced targets: there a level's h-step error is the sum of h one-step errors,
    which the one-step loss does not see. On series modelled in levels it measured worse at
    1 and 5 steps (El Nino, 3 seeds: median 5-step test RMSE 1.08 against 0.93).
    """
    targets = list(mseries.target_names)
    if config.rollout < 2 or transform.lag == 0:
        return None
    if not set(mseries.feature_names) <= set(targets):
        return None
    if rows - config.window - (config.rollout - 1) < 1:
        return None
    feedback = torch.tensor([targets.index(f) for f in mseries.feature_names], device=device)
    return Rollout(feedback, config.rollout, transform.lag)


def train(series: Series, config: TrainConfig, progress: bool = False) -> Trained:
    from training.intervals import calibrate

    split, transform, mseries, msplit = model_data(series, config)
    levels = None if mseries is series else series  # evaluation in levels when transformed
    t = None if levels is None else transform
    scalers = _scalers(mseries, config, msplit.train_end)
    device = resolve_device(config.device)
    model = _new_model(mseries, config, device)
    x, y = _tensors(mseries, scalers, device)
    rollout = make_rollout(mseries, config, transform, msplit.train_end, device)
    history = fit(model, x, y, msplit, config, progress=progress, rollout=rollout)
    model = model.cpu().eval()
    validation = evaluate_validation(
        torch_runner(model), mseries, msplit, scalers, config.window, t, levels
    )
    # Interval widths from the validated model's errors on rows it never trained on.
    intervals = calibrate(model, mseries, msplit, scalers, transform, levels)
    refitted = None
    if config.refit and history.best_epoch >= 1:  # 0: validation never had a finite loss
        scalers = _scalers(mseries, config, msplit.val_end)
        model = _new_model(mseries, config, device)
        x, y = _tensors(mseries, scalers, device)
        rollout = make_rollout(mseries, config, transform, msplit.val_end, device)
        refitted = refit(model, x, y, msplit.val_end, history.best_epoch, config, progress, rollout)
        model = model.cpu().eval()
    evaluation = evaluate(
        torch_runner(model), mseries, msplit, scalers, config.window, validation, t, levels
    )
    return Trained(
        model, config, series, split, scalers, history, evaluation, refitted, transform, intervals
    )


def training_inputs(trained: Trained) -> np.ndarray:
    """The scaled inputs of the rows the final model was fitted on (N, F)."""
    mseries = trained.model_series
    rows = mseries.features[: trained.fitted_rows - trained.transform.lag]
    return apply(trained.scalers, mseries.feature_names, rows)


def refit_trained(trained: Trained, progress: bool = False) -> Trained:
    """`trained` (fitted without refit) refit on training + validation, as `train` would.

    The same as `train` with refit on: the same transform, initialisation and batch order,
    for the epochs the validated run chose. The validation figures and the interval widths
    stay those of `trained` (both come from the model before the refit, as in `train`).
    """
    config = replace(trained.config, refit=True)
    if trained.history.best_epoch < 1:  # validation never had a finite loss: nothing to refit
        return replace(trained, config=config)
    series, transform = trained.series, trained.transform
    identity = transform.lag == 0 and transform.log is None  # as model_data leaves it
    mseries = series if identity else trained.model_series
    msplit = shifted(trained.split, transform.lag)
    levels = None if mseries is series else series
    t = None if levels is None else transform
    device = resolve_device(config.device)
    scalers = _scalers(mseries, config, msplit.val_end)
    model = _new_model(mseries, config, device)
    x, y = _tensors(mseries, scalers, device)
    rollout = make_rollout(mseries, config, transform, msplit.val_end, device)
    epochs = trained.history.best_epoch
    refitted = refit(model, x, y, msplit.val_end, epochs, config, progress, rollout)
    model = model.cpu().eval()
    evaluation = evaluate(
        torch_runner(model),
        mseries,
        msplit,
        scalers,
        config.window,
        trained.evaluation.validation,
        t,
        levels,
    )
    return replace(
        trained, model=model, config=config, scalers=scalers, evaluation=evaluation, refit=refitted
    )
