"""One training run end to end in memory: split, scale, fit, refit, evaluate.

Writing is export's job. The epochs are chosen on the validation rows; then, unless the
config turns it off, the model is trained again from the same initialisation on training
plus validation for that many epochs, so it has seen the rows nearest the test span.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from training.config import TrainConfig
from training.data import Series, Split, check_split, split_series
from training.evaluate import Evaluation, evaluate, evaluate_validation, torch_runner
from training.fit import FitResult, fit, make_reproducible, refit, resolve_device
from training.models import Forecaster
from training.scalers import Scaler, apply, fit_scalers


@dataclass(frozen=True)
class Trained:
    """A fitted model (back on the CPU) and everything needed to describe it."""

    model: Forecaster
    config: TrainConfig
    series: Series
    split: Split
    scalers: dict[str, Scaler]  # fitted on the rows the final model was trained on
    history: FitResult  # the run on the training rows, validated: it chose the epochs
    evaluation: Evaluation
    refit: FitResult | None = None  # the run on training + validation, when there was one
    # How the model was chosen (training.search), when a search chose it: the manifest's
    # training.search block.
    search: dict[str, Any] | None = None

    @property
    def fitted_rows(self) -> int:
        """Rows [0, fitted_rows) the final model was trained on."""
        return self.split.val_end if self.refit is not None else self.split.train_end


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


def prepare(series: Series, config: TrainConfig) -> tuple[Split, dict[str, Scaler]]:
    """Split chronologically (checked) and fit scalers on the training rows only."""
    split = make_split(series, config)
    return split, _scalers(series, config, split.train_end)


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


def train(series: Series, config: TrainConfig, progress: bool = False) -> Trained:
    split, scalers = prepare(series, config)
    device = resolve_device(config.device)
    model = _new_model(series, config, device)
    x, y = _tensors(series, scalers, device)
    history = fit(model, x, y, split, config, progress=progress)
    model = model.cpu().eval()
    validation = evaluate_validation(torch_runner(model), series, split, scalers, config.window)
    refitted = None
    if config.refit and history.best_epoch >= 1:  # 0: validation never had a finite loss
        scalers = _scalers(series, config, split.val_end)
        model = _new_model(series, config, device)
        x, y = _tensors(series, scalers, device)
        refitted = refit(model, x, y, split.val_end, history.best_epoch, config, progress)
        model = model.cpu().eval()
    evaluation = evaluate(
        torch_runner(model), series, split, scalers, config.window, validation=validation
    )
    return Trained(model, config, series, split, scalers, history, evaluation, refitted)


def training_inputs(trained: Trained) -> np.ndarray:
    """The scaled inputs of the rows the final model was fitted on (N, F)."""
    rows = trained.series.features[: trained.fitted_rows]
    return apply(trained.scalers, trained.series.feature_names, rows)


def refit_trained(trained: Trained, progress: bool = False) -> Trained:
    """`trained` (fitted without refit) refit on training + validation, as `train` would.

    The same as `train` with refit on: the same initialisation and batch order, for the
    epochs the validated run chose. The validation figures stay those of `trained`.
    """
    series, split = trained.series, trained.split
    config = replace(trained.config, refit=True)
    if trained.history.best_epoch < 1:  # validation never had a finite loss: nothing to refit
        return replace(trained, config=config)
    device = resolve_device(config.device)
    scalers = _scalers(series, config, split.val_end)
    model = _new_model(series, config, device)
    x, y = _tensors(series, scalers, device)
    refitted = refit(model, x, y, split.val_end, trained.history.best_epoch, config, progress)
    model = model.cpu().eval()
    evaluation = evaluate(
        torch_runner(model),
        series,
        split,
        scalers,
        config.window,
        validation=trained.evaluation.validation,
    )
    return Trained(model, config, series, split, scalers, trained.history, evaluation, refitted)
