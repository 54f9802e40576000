"""Fitting is reproducible and keeps the best epoch; metrics mean what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data import Series, split_series
from training.evaluate import evaluate, metrics, smape, torch_runner
from training.fit import streaming_loss
from training.pipeline import Trained, train
from training.scalers import apply

from .conftest import tiny_config


def test_metrics_on_known_values() -> None:
    pred, actual = np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0])
    m = metrics(pred, actual)
    assert m["rmse"] == pytest.approx(np.sqrt(5 / 3))
    assert m["mae"] == pytest.approx(1.0)
    assert m["smape"] == pytest.approx(100 / 3 * (0 + 2 / 5 + 2 / 6 * 2))
    assert smape(np.zeros(2), np.zeros(2)) == 0.0


def test_identity_runner_is_persistence(sine: Series) -> None:
    """A model that echoes its input predicts the previous value: exactly persistence."""
    cfg = tiny_config()
    split = split_series(sine.rows, cfg.val_fraction, cfg.test_fraction)
    from training.pipeline import prepare

    _, scalers = prepare(sine, cfg)
    ev = evaluate(lambda x: x.copy(), sine, split, scalers, cfg.window)
    for way in ("streaming", "windowed"):
        assert ev.metrics[way]["rmse"] == pytest.approx(ev.metrics["persistence"]["rmse"])
    assert ev.ratios()["streaming_vs_persistence"] == pytest.approx(1.0)
    np.testing.assert_allclose(ev.actual[:, 0], sine.targets[800:, 0])
    assert ev.metrics["noiseless"]["rmse"] == pytest.approx(0.5, abs=0.05)


def test_fit_is_reproducible(sine: Series, tiny_trained: Trained) -> None:
    again = train(sine, tiny_config("lstm"))
    assert again.history.train_loss == tiny_trained.history.train_loss
    assert again.history.val_loss == tiny_trained.history.val_loss
    assert again.evaluation.metrics == tiny_trained.evaluation.metrics
    for a, b in zip(again.model.parameters(), tiny_trained.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_another_seed_gives_another_model(sine: Series, tiny_trained: Trained) -> None:
    other = train(sine, tiny_config("lstm", seed=7))
    assert other.history.train_loss != tiny_trained.history.train_loss


def test_early_stopping_restores_the_best_weights(sine: Series) -> None:
    trained = train(sine, tiny_config("rnn", epochs=6, patience=1, lr=0.05, lr_min=0.05))
    h = trained.history
    assert h.epochs_run <= 6
    assert h.best_epoch == int(np.argmin(h.val_loss)) + 1
    if h.epochs_run < 6:
        assert h.epochs_run == h.best_epoch + 1  # stopped after one epoch without progress
    split, scalers = trained.split, trained.scalers
    x = torch.from_numpy(apply(scalers, ("value",), sine.features).astype(np.float32))
    restored = streaming_loss(trained.model, x, x, split.train_end, split.val_end)
    assert restored == pytest.approx(min(h.val_loss), rel=1e-5)


def test_streaming_beats_persistence_after_a_short_fit(sine: Series) -> None:
    cfg = tiny_config("gru", hidden_size=8, window=40, burn_in=10, epochs=4, lr=0.02)
    trained = train(sine, cfg)
    ratios = trained.evaluation.ratios()
    assert ratios["streaming_vs_persistence"] < 0.9
    assert trained.evaluation.metrics["streaming"]["rmse"] > 0.4  # noise sigma 0.5 is the floor


def test_runner_matches_model_outputs(tiny_trained: Trained) -> None:
    x = np.random.default_rng(0).normal(size=(2, 5, 1)).astype(np.float32)
    with torch.no_grad():
        want, _ = tiny_trained.model(torch.from_numpy(x))
    np.testing.assert_array_equal(torch_runner(tiny_trained.model)(x), want.numpy())
