"""Recurrent forecasters: an RNN, LSTM or GRU stack with a linear head after every step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn

from training.config import Cell

# h (L, B, H) for rnn and gru; (h, c) for lstm.
State: TypeAlias = Tensor | tuple[Tensor, Tensor]

_CELLS: dict[str, Callable[..., nn.Module]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class Forecaster(nn.Module):
    """One-step-ahead forecaster: y[:, t] predicts the targets at t + 1 from x[:, : t + 1]."""

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        output_size: int = 1,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.output_size = output_size
        # torch warns when dropout is set on a single layer; it only acts between layers.
        self.rnn = _CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x (B, T, F), state or None (zeros) -> y (B, T, O), state after the last step."""
        out, new_state = self.rnn(x, state)  # out (B, T, H)
        return self.head(out), new_state

    def zero_state(self, batch: int, device: torch.device | None = None) -> State:
        h = torch.zeros(self.num_layers, batch, self.hidden_size, device=device)
        return (h, h.clone()) if self.cell == "lstm" else h

    def architecture(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "output_size": self.output_size,
            "dropout": self.dropout,
        }


def build_forecaster(arch: dict[str, Any]) -> Forecaster:
    """Rebuild a forecaster from a manifest's architecture block."""
    return Forecaster(
        cell=arch["cell"],
        input_size=int(arch["input_size"]),
        hidden_size=int(arch["hidden_size"]),
        num_layers=int(arch["num_layers"]),
        dropout=float(arch.get("dropout", 0.0)),
        output_size=int(arch["output_size"]),
    )
