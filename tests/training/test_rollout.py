"""Multi-step training: the rollout loss, when it applies, and the search's transform variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.config import TrainConfig, legacy_config
from training.data import Series
from training.fit import Rollout, rollout_pass
from training.manifest import TargetTransform
from training.models import Forecaster
from training.pipeline import make_rollout
from training.search import UNLOGGED, candidate_config

from .conftest import tiny_config


def _by_hand(
    model: Forecaster,
    xb: torch.Tensor,
    y: torch.Tensor,
    idx: torch.Tensor,
    origins: list[int],
    steps: int,
    lag: int,
) -> float:
    """The rollout loss one origin at a time, each forecast fed back by hand."""
    total = np.zeros(steps)
    count = 0
    for b in range(xb.shape[0]):
        for o in origins:
            pred, state = model(xb[b : b + 1, : o + 1])
            step = pred[:, -1:]
            errors = []
            for h in range(1, steps + 1):
                if h > 1:
                    step, state = model(step, state)
                errors.append(float(step[0, 0, 0] - y[idx[b, o] + h, 0]))
            levels = [
                sum(errors[j] for j in range(h + 1) if lag and (h - j) % lag == 0)
                if lag
                else errors[h]
                for h in range(steps)
            ]
            total += np.square(levels)
            count += 1
    return float(np.mean(total / count / np.arange(1, steps + 1)))


@pytest.mark.parametrize("lag", [0, 1, 2])
def test_the_rollout_loss_scores_fed_back_forecasts_in_levels(lag: int) -> None:
    torch.manual_seed(3)
    model = Forecaster("lstm", 1, 5)
    y = torch.randn(40, 1)
    x = y.clone()
    starts = torch.tensor([0, 7, 13])
    w, burn, steps = 12, 2, 4
    idx = starts[:, None] + torch.arange(w)
    with torch.no_grad():
        pred, loss = rollout_pass(
            model, x[idx], y, idx, burn, Rollout(torch.tensor([0]), steps, lag, origins=w - burn)
        )
        whole, _ = model(x[idx])
        want = _by_hand(model, x[idx], y, idx, list(range(burn, w)), steps, lag)
    # The one-step predictions are those of one pass over each subsequence.
    torch.testing.assert_close(pred, whole, rtol=1e-5, atol=1e-6)
    assert float(loss) == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("origins", [1, 8])
def test_long_subsequences_start_rollouts_from_a_few_positions_ending_at_the_last(
    origins: int,
) -> None:
    torch.manual_seed(4)
    model = Forecaster("gru", 1, 3)
    y = torch.randn(200, 1)
    w, burn = 100, 10
    idx = torch.arange(w)[None, :]
    rollout = Rollout(torch.tensor([0]), 3, origins=origins)
    with torch.no_grad():
        _, loss = rollout_pass(model, y[idx], y, idx, burn, rollout)
    stride = (w - burn) // origins
    starts = list(range(w - 1, burn - 1, -stride))[::-1]
    assert starts[-1] == w - 1
    assert len(starts) == origins + ((w - burn) % origins > 0)
    with torch.no_grad():
        want = _by_hand(model, y[idx], y, idx, starts, 3, 0)
    assert float(loss) == pytest.approx(want, rel=1e-4)


def _series(features: tuple[str, ...], rows: int = 100) -> Series:
    values = np.random.default_rng(0).normal(size=(rows, len(features)))
    return Series("s", "", features, ("v",), values, values[:, :1].copy())


def test_a_rollout_needs_every_input_a_target_and_rows_for_it() -> None:
    cfg = tiny_config("gru", window=10, burn_in=2)
    plain = TargetTransform(lag=1)
    device = torch.device("cpu")
    made = make_rollout(_series(("v",)), cfg, plain, 60, device)
    assert made is not None
    assert (made.steps, made.lag, made.feedback.tolist()) == (cfg.rollout, 1, [0])
    assert make_rollout(_series(("v", "other")), cfg, plain, 60, device) is None  # nothing to feed
    assert make_rollout(_series(("v",)), cfg, TargetTransform(log="log"), 60, device) is None
    assert make_rollout(_series(("v",)), cfg, plain, 10 + cfg.rollout - 2, device) is None
    one_step = TrainConfig(**{**cfg.to_dict(), "rollout": 1})
    assert make_rollout(_series(("v",)), one_step, plain, 60, device) is None


def test_old_manifests_trained_one_step_and_rollout_is_checked() -> None:
    assert legacy_config({}).rollout == 1  # the shipped models retrain as they ran
    assert TrainConfig().rollout > 1
    with pytest.raises(ValueError, match="rollout must be at least 1, got 0"):
        TrainConfig(rollout=0)


def test_unlogged_is_the_automatic_transform_without_its_log() -> None:
    cfg = tiny_config("lstm", season=12)
    chosen = TargetTransform(log="log", lag=1, chosen="auto")
    assert candidate_config(cfg, {"transform": UNLOGGED}, 7, chosen).transform == "diff"
    seasonal = TargetTransform(log="log", lag=12, season=12, chosen="auto")
    done = candidate_config(cfg, {"transform": UNLOGGED}, 7, seasonal)
    assert done.transform == "seasonal-diff"
    assert candidate_config(cfg, {"transform": "auto"}, 7, chosen).transform == "auto"
