"""An average of forecasters exported as one model with the repository's one-state contract.

The members share the cell, the layer count, the inputs and the outputs (and were fitted on
the same scaled data); their hidden sizes may differ. The ensemble's state is the members'
states concatenated along the hidden axis, (L, B, sum of H), for h and (LSTM) c alike, so
the ONNX graph has the usual inputs x, h0[, c0] and outputs y, h_n[, c_n], and the service
carries it like any other state. Its prediction is the mean of the members' predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from training.models import Forecaster, State


class Ensemble(Forecaster):
    """Mean of `members`; a Forecaster to everything that trains, scores and exports models.

    It subclasses Forecaster for the attributes and methods those read (cell, sizes,
    zero_state, architecture) but holds no recurrent layer of its own.
    """

    def __init__(self, members: Sequence[Forecaster]) -> None:
        nn.Module.__init__(self)  # not Forecaster's: the members are the layers
        first = members[0]
        for m in members[1:]:
            same = (m.cell, m.num_layers, m.input_size, m.output_size)
            if same != (first.cell, first.num_layers, first.input_size, first.output_size):
                raise ValueError("ensemble members must share cell, layers, inputs and outputs")
        self.members = nn.ModuleList(members)
        self.cell = first.cell
        self.input_size = first.input_size
        self.num_layers = first.num_layers
        self.output_size = first.output_size
        self.dropout = first.dropout
        self.sizes = [m.hidden_size for m in members]
        self.hidden_size = sum(self.sizes)

    def _slices(self) -> list[tuple[int, int]]:
        bounds, lo = [], 0
        for size in self.sizes:
            bounds.append((lo, lo + size))
            lo += size
        return bounds

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x (B, T, F), state or None (zeros) -> mean y (B, T, O), concatenated state."""
        ys, hs, cs = [], [], []
        for member, (lo, hi) in zip(self.members, self._slices(), strict=True):
            part: State | None = None
            if isinstance(state, tuple):
                part = (state[0][:, :, lo:hi], state[1][:, :, lo:hi])
            elif state is not None:
                part = state[:, :, lo:hi]
            y, new = member(x, part)
            ys.append(y)
            if isinstance(new, tuple):
                hs.append(new[0])
                cs.append(new[1])
            else:
                hs.append(new)
        mean = torch.stack(ys).mean(dim=0)
        h = torch.cat(hs, dim=2)
        return mean, ((h, torch.cat(cs, dim=2)) if cs else h)

    def architecture(self) -> dict[str, Any]:
        out = super().architecture()
        out["members"] = [m.architecture() for m in self.members]  # type: ignore[operator]
        return out
