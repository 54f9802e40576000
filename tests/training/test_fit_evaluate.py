"""Fitting is reproducible and keeps the best epoch; metrics mean what they say."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from training.config import TrainConfig, legacy_config
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
    cfg = tiny_config("rnn", epochs=6, patience=1, lr=0.05, lr_min=0.05, refit=False)
    trained = train(sine, cfg)
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


def _val_loss(trained: Trained, series: Series) -> float:
    split, scalers = trained.split, trained.scalers
    x = torch.from_numpy(apply(scalers, ("value",), series.features).astype(np.float32))
    return streaming_loss(trained.model, x, x, split.train_end, split.val_end)


def test_no_early_stopping_runs_every_epoch_and_keeps_the_last(sine: Series) -> None:
    cfg = tiny_config(
        "rnn", epochs=5, patience=1, lr=0.05, lr_min=0.05, early_stopping=False, refit=False
    )
    trained = train(sine, cfg)
    h = trained.history
    assert (h.epochs_run, h.best_epoch) == (5, 5)
    assert _val_loss(trained, sine) == pytest.approx(h.val_loss[-1], rel=1e-5)


def test_lr_schedule_does_not_depend_on_the_epochs_cap(sine: Series) -> None:
    """Raising the cap runs more epochs at lr_min; the first epochs are the same run."""
    common = {"lr": 0.02, "lr_min": 0.002, "lr_epochs": 3, "early_stopping": False}
    short = train(sine, tiny_config("gru", epochs=3, refit=False, **common)).history
    long = train(sine, tiny_config("gru", epochs=5, refit=False, **common)).history
    assert long.lr[:3] == short.lr
    assert long.lr[0] == 0.02
    assert long.lr[1] == pytest.approx(0.002 + 0.018 * 0.75)  # cosine: (1 + cos(pi / 3)) / 2
    assert long.lr[2:] == pytest.approx([0.002 + 0.018 * 0.25, 0.002, 0.002])
    assert long.train_loss[:3] == short.train_loss
    assert long.val_loss[:3] == short.val_loss


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"patience": 0}, "patience must be at least 1, got 0 (--no-early-stopping"),
        ({"patience": -1}, "patience must be at least 1, got -1"),
        ({"lr": 0.001, "lr_min": 0.002}, "lr_min must be in [0, lr] = [0, 0.001], got 0.002"),
        ({"lr_min": -0.1}, "lr_min must be in [0, lr]"),
        ({"lr": 0.0}, "lr must be positive, got 0.0"),
        ({"lr_epochs": 0}, "lr_epochs must be at least 1, got 0"),
        ({"test_rows": 0}, "test_rows must be at least 1, got 0"),
        ({"val_rows": -3}, "val_rows must be at least 1, got -3"),
    ],
)
def test_config_refuses_settings_that_would_mislead(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**overrides)  # type: ignore[arg-type]


def test_refit_trains_on_training_plus_validation(sine: Series, tiny_trained: Trained) -> None:
    t = tiny_trained
    assert t.config.refit
    assert t.refit is not None
    assert t.refit.epochs_run == t.history.best_epoch >= 1
    assert t.fitted_rows == t.split.val_end == 800
    # The scalers now describe the rows the refit model saw: training and validation.
    assert t.scalers["value"].offset == pytest.approx(float(sine.features[:800, 0].mean()))
    assert t.evaluation.validation is not None
    unrefit = train(sine, tiny_config("lstm", refit=False))
    assert unrefit.refit is None
    assert unrefit.fitted_rows == 640
    assert unrefit.history.val_loss == t.history.val_loss  # the same validated run
    assert unrefit.evaluation.validation == t.evaluation.validation  # of the model before refit
    assert unrefit.evaluation.metrics != t.evaluation.metrics  # the test model is another
    assert t.refit.lr == t.history.lr[: t.refit.epochs_run]  # the same schedule


def test_validation_metrics_are_in_original_units(sine: Series) -> None:
    """Persistence on the validation rows, computed by hand, in the units of the CSV."""
    trained = train(sine, tiny_config("gru", refit=False))
    v = trained.evaluation.validation
    assert v is not None
    rows = sine.targets[640:800, 0]
    persistence = float(np.sqrt(np.mean((sine.targets[639:799, 0] - rows) ** 2)))
    assert v["persistence"]["rmse"] == pytest.approx(persistence)
    assert v["noiseless"]["rmse"] == pytest.approx(0.5, abs=0.06)
    assert 0.3 < v["streaming"]["rmse"] < 1.5


def test_a_manifest_from_before_the_new_settings_rebuilds_its_run() -> None:
    recorded = {**TrainConfig().to_dict(), "epochs": 40}
    for name in ("test_rows", "val_rows", "early_stopping", "lr_epochs", "refit"):
        del recorded[name]
    cfg = legacy_config(recorded)
    assert (cfg.refit, cfg.lr_epochs, cfg.early_stopping, cfg.test_rows) == (False, 40, True, None)
    assert legacy_config(TrainConfig().to_dict()) == TrainConfig()
