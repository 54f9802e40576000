"""Fitting: Adam on MSE over long random subsequences, early stopping on streaming validation.

Each optimisation step scores a batch of `window`-long subsequences of the training part,
ignoring the first `burn_in` steps of each (the state is still cold there). Validation runs
the model once over the whole history, state carried, and scores the validation part: the
same way the model is used when streaming, so early stopping picks what streaming rewards.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm

from training.config import TrainConfig
from training.data import Split
from training.models import Forecaster

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """Loss curves (scaled units, one value per epoch) and where the best weights came from."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0  # 1-based epoch whose weights were restored
    epochs_run: int = 0
    seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda requested but torch sees no CUDA device")
    return torch.device(name)


def make_reproducible(config: TrainConfig, device: torch.device) -> None:
    """Seed torch, fix the thread count and ask for deterministic kernels."""
    if device.type == "cuda":
        # cuBLAS needs a fixed workspace to be deterministic; it reads this at first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)


def streaming_loss(model: Forecaster, x: Tensor, y: Tensor, start: int, end: int) -> float:
    """MSE of one-step predictions for rows [start, end), state carried from row 0."""
    model.eval()
    with torch.no_grad():
        pred, _ = model(x[None, : end - 1])  # (1, end - 1, O); pred[:, t] predicts row t + 1
        return float(nn.functional.mse_loss(pred[0, start - 1 :], y[start:end]))


def fit(
    model: Forecaster,
    x: Tensor,
    y: Tensor,
    split: Split,
    config: TrainConfig,
    progress: bool = False,
) -> FitResult:
    """Train in place on rows [0, split.train_end); x (N, F), y (N, O) scaled, on the device."""
    w, burn = config.window, config.burn_in
    n_starts = split.train_end - w  # input rows [s, s + w), targets rows [s + 1, s + w + 1)
    starts = torch.arange(n_starts)
    offsets = torch.arange(w)
    gen = torch.Generator().manual_seed(config.seed)
    optim = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        optim, T_max=config.epochs, eta_min=config.lr_min
    )
    # The average (when on) is what gets validated, kept and shipped: it smooths the noise
    # that each small batch of a noisy series puts into the raw weights.
    averaged = [p.detach().clone() for p in model.parameters()] if config.ema > 0 else None
    result = FitResult()
    best_val, best_weights, stale = math.inf, copy.deepcopy(model.state_dict()), 0
    t0 = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc=config.cell, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = starts[torch.randperm(n_starts, generator=gen)]
        total, count = 0.0, 0
        for i in range(0, n_starts, config.batch_size):
            idx = order[i : i + config.batch_size, None] + offsets  # (B, W) row numbers
            xb, yb = x[idx], y[idx + 1]  # (B, W, F), (B, W, O)
            pred, _ = model(xb)
            loss = nn.functional.mse_loss(pred[:, burn:], yb[:, burn:])
            optim.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optim.step()
            if averaged is not None:
                with torch.no_grad():
                    for avg, p in zip(averaged, model.parameters(), strict=True):
                        avg.lerp_(p, 1.0 - config.ema)
            total += loss.item() * idx.shape[0]
            count += idx.shape[0]
        sched.step()
        if averaged is not None:
            raw = _swap(model, averaged)
        val = streaming_loss(model, x, y, split.train_end, split.val_end)
        result.train_loss.append(total / count)
        result.val_loss.append(val)
        result.epochs_run = epoch
        bar.set_postfix(train=f"{total / count:.4f}", val=f"{val:.4f}")
        if val < best_val:
            best_val, best_weights, stale = val, copy.deepcopy(model.state_dict()), 0
            result.best_epoch = epoch
        else:
            stale += 1
        if averaged is not None:
            averaged = _swap(model, raw)
        if stale >= config.patience:
            break
    bar.close()
    model.load_state_dict(best_weights)
    result.seconds = time.perf_counter() - t0
    log.info(
        "fit %s: %d epochs, best epoch %d, val loss %.5f, %.1f s",
        config.cell,
        result.epochs_run,
        result.best_epoch,
        best_val,
        result.seconds,
    )
    return result


def _swap(model: nn.Module, values: list[Tensor]) -> list[Tensor]:
    """Load `values` into the model's parameters; returns the values they held."""
    held = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, v in zip(model.parameters(), values, strict=True):
            p.copy_(v)
    return held
