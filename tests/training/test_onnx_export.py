"""ONNX export: I/O contract, parity with PyTorch over the grid, and a wrong export is caught."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from training.models import Forecaster
from training.onnx_export import (
    JITTER,
    ParityError,
    bootstrap,
    check_parity,
    export_onnx,
    parity_times,
)

WINDOW = 5  # parity runs up to 10 x window + 3 steps


def _model(cell: str, layers: int, seed: int = 0) -> Forecaster:
    torch.manual_seed(seed)
    dropout = 0.2 if layers > 1 else 0.0  # must be inactive in the exported (eval) graph
    return Forecaster(cell, input_size=2, hidden_size=4, num_layers=layers, dropout=dropout)  # type: ignore[arg-type]


def test_parity_times_span_one_to_ten_windows() -> None:
    assert parity_times(20) == (1, 7, 20, 203)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_parity_over_the_grid(cell: str, layers: int) -> None:
    model = _model(cell, layers)
    blob = export_onnx(model)
    err = check_parity(model, blob, WINDOW, batches=(1, 3, 64))
    assert 0.0 <= err <= 1e-5


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_graph_names_and_dynamic_axes(cell: str) -> None:
    graph = onnx.load_from_string(export_onnx(_model(cell, 2))).graph
    state_in = ["h0", "c0"] if cell == "lstm" else ["h0"]
    state_out = ["h_n", "c_n"] if cell == "lstm" else ["h_n"]
    assert [i.name for i in graph.input] == ["x", *state_in]
    assert [o.name for o in graph.output] == ["y", *state_out]

    def dims(v: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    shapes = {v.name: dims(v) for v in [*graph.input, *graph.output]}
    assert shapes["x"] == ["batch", "time", 2]
    assert shapes["y"] == ["batch", "time", 1]
    for name in state_in + state_out:
        assert shapes[name] == [2, "batch", 4]


def _perturbed(blob: bytes) -> bytes:
    """The same graph with one weight nudged by 1e-3: small enough to look plausible."""
    proto = onnx.load_from_string(blob)
    init = next(i for i in proto.graph.initializer if numpy_helper.to_array(i).size > 1)
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 1e-3
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    return proto.SerializeToString()


POOL = np.sin(np.arange(0.0, 30.0, 0.1))[:, None].repeat(2, axis=1)  # (300, 2)


def test_bootstrap_reads_the_pool_without_jumps() -> None:
    x = bootstrap(POOL, batch=4, time=1000, rng=np.random.default_rng(0))
    assert x.shape == (4, 1000, 2)
    steps = np.abs(np.diff(x, axis=1))
    # Consecutive sine rows differ by at most 0.1; the jitter adds a few of its sigmas.
    assert steps.max() < 0.1 + 10 * JITTER
    assert not np.allclose(x[0], x[1])  # random start rows
    assert np.abs(x).max() < 1 + 6 * JITTER


@pytest.mark.parametrize("pool", [None, POOL], ids=["white-noise", "bootstrap"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_perturbed_weight_is_caught(cell: str, pool: np.ndarray | None) -> None:
    model = _model(cell, 1)
    blob = export_onnx(model)
    assert check_parity(model, blob, WINDOW, pool=pool) <= 1e-5
    with pytest.raises(ParityError, match="max abs error"):
        check_parity(model, _perturbed(blob), WINDOW, pool=pool)


def test_export_of_another_model_is_caught() -> None:
    exported, other = _model("gru", 2, seed=0), _model("gru", 2, seed=1)
    with pytest.raises(ParityError, match=r"y: max abs error .* \(batch 1, time 1\)"):
        check_parity(other, export_onnx(exported), WINDOW)


def test_graph_that_ignores_the_initial_state_is_caught() -> None:
    """A zero-state-only export would pass a zero-state check; random states catch it."""
    model = _model("lstm", 1)
    blob = export_onnx(model)
    proto = onnx.load_from_string(blob)
    # Feed zeros instead of h0 into the LSTM node: the graph still runs, but ignores h0.
    zeros = numpy_helper.from_array(np.zeros((1, 1, 4), np.float32), "h0_zero")
    proto.graph.initializer.append(zeros)
    for node in proto.graph.node:
        if node.op_type == "LSTM":
            node.input[5] = "h0_zero"
    with pytest.raises(ParityError):
        check_parity(model, proto.SerializeToString(), WINDOW, batches=(1,))
