"""Training configuration: one dataclass, every default explained."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Cell = Literal["rnn", "lstm", "gru"]
ScalerKind = Literal["minmax", "standard"]
CELLS: tuple[Cell, ...] = ("rnn", "lstm", "gru")
SCALER_KINDS: tuple[ScalerKind, ...] = ("minmax", "standard")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; recorded verbatim in the manifest."""

    cell: Cell = "lstm"  # recurrent cell: rnn | lstm | gru
    hidden_size: int = 32  # small: a sine needs a resonator, not capacity; keeps ONNX tiny
    num_layers: int = 1  # one layer is enough for a univariate series
    dropout: float = 0.0  # between stacked layers only (ignored by torch for one layer)
    window: int = 200  # training subsequence length: long, so the state learns to average noise
    burn_in: int = 20  # first steps of each subsequence are not scored: the state is still cold
    batch_size: int = 32  # subsequences per optimisation step
    lr: float = 0.005  # Adam learning rate at the start of the cosine schedule
    lr_min: float = 0.0005  # learning rate the cosine schedule ends at
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

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.scaler not in SCALER_KINDS:
            raise ValueError(f"scaler must be one of {', '.join(SCALER_KINDS)}")
        positive = ("hidden_size", "num_layers", "window", "batch_size", "epochs", "threads")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.burn_in < self.window:
            raise ValueError(f"burn_in must be in [0, window), got {self.burn_in}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
