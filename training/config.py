"""Training configuration: one dataclass, every default explained."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Cell = Literal["rnn", "lstm", "gru"]
ScalerKind = Literal["minmax", "standard"]
CELLS: tuple[Cell, ...] = ("rnn", "lstm", "gru")
# Target transforms (training/transforms.py): a log, differences, both, or auto-chosen from
# the training rows. "seasonal" variants difference at --season.
TRANSFORMS: tuple[str, ...] = (
    "auto",
    "none",
    "log",
    "log1p",
    "diff",
    "seasonal-diff",
    "log-diff",
    "log-seasonal-diff",
    "log1p-diff",
    "log1p-seasonal-diff",
)
SCALER_KINDS: tuple[ScalerKind, ...] = ("minmax", "standard")
# The default window when the data leaves room for it: long enough for the state to learn
# to average noise (the synthetic series' setting). Shorter series get a third of their
# training rows (training.data.auto_window), so each epoch still sees many subsequences.
MAX_AUTO_WINDOW = 200


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; recorded verbatim in the manifest."""

    cell: Cell = "lstm"  # recurrent cell: rnn | lstm | gru
    hidden_size: int = 32  # small: a sine needs a resonator, not capacity; keeps ONNX tiny
    num_layers: int = 1  # one layer is enough for a univariate series
    dropout: float = 0.0  # between stacked layers only (ignored by torch for one layer)
    # Training subsequence length: long, so the state learns to average noise. The CLI's
    # default adapts to the data (training.data.auto_window); the synthetic series gets this.
    window: int = MAX_AUTO_WINDOW
    burn_in: int = 20  # first steps of each subsequence are not scored (CLI default: window // 10)
    batch_size: int = 32  # subsequences per optimisation step
    lr: float = 0.005  # Adam learning rate at the start of the cosine schedule
    lr_min: float = 0.0005  # learning rate the cosine schedule ends at, and stays at after it
    epochs: int = 60  # upper bound; early stopping usually ends sooner
    patience: int = 10  # epochs without a better validation loss before stopping
    ema: float = 0.9  # moving average of the weights per step: validated and kept (0: off)
    grad_clip: float = 1.0  # max gradient norm (recurrent nets explode without it)
    scaler: ScalerKind = "standard"  # per-column scaling, fitted on the training part only
    val_fraction: float = 0.2  # validation: this share of what precedes the test part
    test_fraction: float = 0.2  # test: this share of the series, taken from its end
    seed: int = 42  # seeds torch and the batch order; same seed, same model
    threads: int = 1  # fixed CPU thread count: results must not depend on the machine load
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    # Added after format 1's first models; a manifest without them was trained with the
    # values legacy_config() fills in.
    test_rows: int | None = None  # test: exactly this many rows at the end (overrides the share)
    val_rows: int | None = None  # validation: exactly this many rows before the test part
    early_stopping: bool = True  # stop after `patience` stale epochs and keep the best; off: all
    # The cosine schedule's length in epochs, apart from the epochs cap: raising --epochs
    # lets a run go on at lr_min instead of stretching the schedule.
    lr_epochs: int = 60
    # Retrain from the same initialisation on training + validation for the epochs chosen on
    # validation: the model then learns from the rows nearest the test span too.
    refit: bool = True
    # Target transform and season (training/transforms.py): "auto" chooses from the
    # training rows only (unit-root tests; a log for a positive series spanning a wide
    # range); the choice is recorded in the manifest's transform block.
    transform: str = "auto"
    season: int | None = None  # period in rows (12: monthly data, yearly season); None: none
    # Out-of-range warnings (training/ranges.py): a value beyond the training rows' min - k
    # std or max + k std is far out. Reporting only: it never changes the model.
    range_k: float = 3.0
    # Multi-step training (training.fit.Rollout): each training subsequence goes on for
    # rollout - 1 steps on its own predictions and the loss adds the 1..rollout-step errors
    # in levels, so the model is tuned for multi-step forecasts too (the graph and the state
    # stay a one-step model's). Only for differenced targets whose inputs are all targets
    # (training.pipeline.make_rollout); 1: one-step loss alone. 8 measured better than 5
    # at 5 steps on cpi and realgdp.
    rollout: int = 8

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.scaler not in SCALER_KINDS:
            raise ValueError(f"scaler must be one of {', '.join(SCALER_KINDS)}")
        positive = (
            "hidden_size",
            "num_layers",
            "window",
            "batch_size",
            "epochs",
            "threads",
            "lr_epochs",
            "rollout",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.patience < 1:
            raise ValueError(
                f"patience must be at least 1, got {self.patience} "
                "(--no-early-stopping trains every epoch)"
            )
        if not self.lr > 0.0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not 0.0 <= self.lr_min <= self.lr:
            raise ValueError(f"lr_min must be in [0, lr] = [0, {self.lr!r}], got {self.lr_min!r}")
        for name in ("test_rows", "val_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not 0 <= self.burn_in < self.window:
            raise ValueError(f"burn_in must be in [0, window), got {self.burn_in}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.transform not in TRANSFORMS:
            raise ValueError(
                f"transform must be one of {', '.join(TRANSFORMS)}, got {self.transform!r}"
            )
        if self.season is not None and self.season < 2:
            raise ValueError(f"season must be at least 2, got {self.season}")
        if "seasonal" in self.transform and self.season is None:
            raise ValueError(f"transform {self.transform} needs a season (--season N)")
        if not self.range_k > 0.0:
            raise ValueError(f"range_k must be positive, got {self.range_k!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# What a manifest written before a field existed was trained with.
_LEGACY = {
    "early_stopping": True,
    "refit": False,
    "test_rows": None,
    "val_rows": None,
    "transform": "none",
    "season": None,
    "rollout": 1,
}


def legacy_config(recorded: dict[str, Any]) -> TrainConfig:
    """The config a manifest records, with fields it predates set as they then behaved.

    Before `lr_epochs` the cosine schedule ran over `epochs`; before `refit` nothing refitted.
    """
    values = {**_LEGACY, "lr_epochs": recorded.get("epochs", TrainConfig.epochs), **recorded}
    return TrainConfig(**values)


# -- automatic model choice (training.search) ----------------------------------------------
# The default budget keeps `seqcast train` with defaults on a 1,000-row series within about
# two minutes on a 2-core machine, baselines, export and report included.
DEFAULT_SEARCH_BUDGET = 60.0
DEFAULT_ENSEMBLE = 5


@dataclass(frozen=True)
class SearchConfig:
    """How `seqcast train` chooses its model on the validation rows; recorded in the manifest."""

    # Seconds for fitting candidates and refitting the chosen ones (0: no search, train the
    # given config alone). Candidates start only while their estimated cost still fits.
    budget: float = DEFAULT_SEARCH_BUDGET
    # Most candidates averaged into one model; the average of the top k is kept when it
    # scores better on validation than fewer (1: always keep the best alone).
    ensemble: int = DEFAULT_ENSEMBLE
    seeds: int = 5  # seeds tried at most per structure (cell, hidden size, window, transform)

    def __post_init__(self) -> None:
        if not self.budget >= 0.0:
            raise ValueError(f"search budget must be at least 0 seconds, got {self.budget!r}")
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be at least 1, got {self.ensemble}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be at least 1, got {self.seeds}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
