"""One training run end to end in memory: scale, fit, evaluate. Writing is export's job."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.config import TrainConfig
from training.data import Series, Split, check_length, split_series
from training.evaluate import Evaluation, evaluate, torch_runner
from training.fit import FitResult, fit, make_reproducible, resolve_device
from training.models import Forecaster
from training.scalers import Scaler, apply, fit_scalers


@dataclass(frozen=True)
class Trained:
    """A fitted model (back on the CPU) and everything needed to describe it."""

    model: Forecaster
    config: TrainConfig
    series: Series
    split: Split
    scalers: dict[str, Scaler]
    history: FitResult
    evaluation: Evaluation


def prepare(series: Series, config: TrainConfig) -> tuple[Split, dict[str, Scaler]]:
    """Check the length, split chronologically and fit scalers on the training rows only."""
    check_length(series, config.window, config.val_fraction, config.test_fraction)
    split = split_series(series.rows, config.val_fraction, config.test_fraction)
    train = slice(0, split.train_end)
    columns = {n: series.features[train, j] for j, n in enumerate(series.feature_names)}
    for j, n in enumerate(series.target_names):
        columns.setdefault(n, series.targets[train, j])
    return split, fit_scalers(config.scaler, columns)


def train(series: Series, config: TrainConfig, progress: bool = False) -> Trained:
    split, scalers = prepare(series, config)
    device = resolve_device(config.device)
    make_reproducible(config, device)
    x = torch.from_numpy(apply(scalers, series.feature_names, series.features).astype(np.float32))
    y = torch.from_numpy(apply(scalers, series.target_names, series.targets).astype(np.float32))
    model = Forecaster(
        cell=config.cell,
        input_size=len(series.feature_names),
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout,
        output_size=len(series.target_names),
    ).to(device)
    history = fit(model, x.to(device), y.to(device), split, config, progress=progress)
    model = model.cpu().eval()
    evaluation = evaluate(torch_runner(model), series, split, scalers, config.window)
    return Trained(model, config, series, split, scalers, history, evaluation)


def training_inputs(trained: Trained) -> np.ndarray:
    """The scaled inputs of the training rows (N, F): what the model was fitted on."""
    rows = trained.series.features[: trained.split.train_end]
    return apply(trained.scalers, trained.series.feature_names, rows)
