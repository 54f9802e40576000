"""Forecasters: shapes for every cell and depth, and exact state continuation."""

from __future__ import annotations

import pytest
import torch

from training.models import Forecaster, build_forecaster


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_forward_shapes(cell: str, layers: int) -> None:
    model = Forecaster(cell, input_size=3, hidden_size=5, num_layers=layers, output_size=2)  # type: ignore[arg-type]
    y, state = model(torch.randn(4, 9, 3))  # (B, T, F)
    assert y.shape == (4, 9, 2)
    states = state if isinstance(state, tuple) else (state,)
    assert len(states) == (2 if cell == "lstm" else 1)
    for s in states:
        assert s.shape == (layers, 4, 5)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_chunked_equals_one_shot(cell: str) -> None:
    torch.manual_seed(0)
    model = Forecaster(cell, input_size=1, hidden_size=6, num_layers=2).eval()  # type: ignore[arg-type]
    x = torch.randn(3, 25, 1)
    with torch.no_grad():
        whole, final = model(x)
        parts, state = [], None
        for chunk in (x[:, :1], x[:, 1:8], x[:, 8:25]):
            y, state = model(chunk, state)
            parts.append(y)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=0, atol=1e-6)
    assert state is not None
    got = state if isinstance(state, tuple) else (state,)
    want = final if isinstance(final, tuple) else (final,)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-6)


def test_zero_state_equals_no_state() -> None:
    torch.manual_seed(0)
    model = Forecaster("lstm", input_size=1, hidden_size=4).eval()
    x = torch.randn(2, 5, 1)
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(x, model.zero_state(2))
    torch.testing.assert_close(a, b)


def test_architecture_rebuilds_the_same_shape() -> None:
    model = Forecaster("gru", input_size=2, hidden_size=7, num_layers=3, dropout=0.1, output_size=1)
    clone = build_forecaster(model.architecture())
    clone.load_state_dict(model.state_dict())
    assert clone.architecture() == model.architecture()
