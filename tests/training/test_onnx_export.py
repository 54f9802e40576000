"""ONNX export: I/O contract, parity with PyTorch over the grid, and a wrong export is caught."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from training.models import Forecaster
from training.onnx_export import (
    DRIFT_FACTOR,
    JITTER,
    MAX_TOLERANCE,
    TOLERANCE,
    ParityError,
    bootstrap,
    check_parity,
    export_onnx,
    parity_record,
    parity_times,
    tolerance_for,
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
    parity = check_parity(model, blob, WINDOW, batches=(1, 3, 64))
    assert 0.0 <= parity.max_abs_error <= 1e-5
    assert [c.time for c in parity.checks] == list(parity_times(WINDOW))
    for c in parity.checks:  # a small model: float32 drift far below the floor
        assert c.float32_drift < 1e-6
        assert c.tolerance == TOLERANCE


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


def perturbed(blob: bytes) -> bytes:
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
    assert check_parity(model, blob, WINDOW, pool=pool).max_abs_error <= 1e-5
    with pytest.raises(ParityError, match="max abs error"):
        check_parity(model, perturbed(blob), WINDOW, pool=pool)


def test_export_of_another_model_is_caught() -> None:
    exported, other = _model("gru", 2, seed=0), _model("gru", 2, seed=1)
    with pytest.raises(ParityError, match=r"(y|h_n): max abs error .* \(batch \d+, time 1;"):
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


@pytest.mark.parametrize(
    ("drift", "tolerance"),
    [(0.0, TOLERANCE), (1e-7, TOLERANCE), (6.9e-6, DRIFT_FACTOR * 6.9e-6), (1.0, MAX_TOLERANCE)],
)
def test_tolerance_follows_the_float32_drift(drift: float, tolerance: float) -> None:
    assert tolerance_for(drift) == pytest.approx(tolerance)


def _ill_conditioned() -> Forecaster:
    """A GRU whose recurrence amplifies rounding: over 2003 steps of white noise its float32
    run drifts from float64 by more than 1e-5, as trained long-memory models can."""
    torch.manual_seed(1)
    model = Forecaster("gru", input_size=1, hidden_size=32).eval()
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(4.0)
    return model


LONG = 200  # parity lengths 1, 7, 200 and 2003


@pytest.fixture(scope="module")
def ill_conditioned() -> tuple[Forecaster, bytes]:
    model = _ill_conditioned()
    return model, export_onnx(model)


def test_float32_rounding_beyond_1e5_passes(ill_conditioned: tuple[Forecaster, bytes]) -> None:
    """The fixed 1e-5 gate refused exports like this one, which are right."""
    model, blob = ill_conditioned
    parity = check_parity(model, blob, LONG)
    assert parity.max_abs_error > 1e-5
    assert parity.float32_drift > 1e-5
    longest = parity.checks[-1]
    assert longest.time == 2003
    assert longest.max_abs_error <= longest.tolerance <= MAX_TOLERANCE
    short = parity.checks[0]
    assert (short.time, short.tolerance) == (1, TOLERANCE)  # no drift yet: the floor
    record = parity_record(parity, LONG, bootstrapped=False)
    assert record["max_abs_error"] == parity.max_abs_error
    assert record["float32_drift"] == parity.float32_drift
    assert [r["time"] for r in record["by_time"]] == [1, 7, 200, 2003]


def _numbers(message: str) -> tuple[str, str]:
    found = re.search(r"max abs error (\S+) > tolerance (\S+) ", message)
    assert found, message
    return found[1], found[2]


def _ignores_h0(blob: bytes) -> bytes:
    proto = onnx.load_from_string(blob)
    zeros = numpy_helper.from_array(np.zeros((1, 1, 32), np.float32), "h0_zero")
    proto.graph.initializer.append(zeros)
    for node in proto.graph.node:
        if node.op_type == "GRU":
            node.input[5] = "h0_zero"
    return proto.SerializeToString()


@pytest.mark.parametrize("fault", ["perturbed", "other-model", "ignores-h0"])
def test_wrong_export_of_an_ill_conditioned_model_still_fails(
    ill_conditioned: tuple[Forecaster, bytes], fault: str
) -> None:
    model, blob = ill_conditioned
    if fault == "perturbed":
        wrong = perturbed(blob)
    elif fault == "other-model":
        torch.manual_seed(2)
        wrong = export_onnx(Forecaster("gru", input_size=1, hidden_size=32))
    else:
        wrong = _ignores_h0(blob)
    batches = (1,) if fault == "ignores-h0" else (1, 3, 64)  # its h0 is fixed at batch 1
    with pytest.raises(ParityError) as info:
        check_parity(model, wrong, LONG, batches=batches)
    error, tolerance = _numbers(str(info.value))
    # Full precision: each number reads back exactly, and the two cannot print alike.
    assert repr(float(error)) == error
    assert repr(float(tolerance)) == tolerance
    assert float(error) > float(tolerance)
    assert "float32 and float64 differ by" in str(info.value)


def test_an_export_that_cannot_run_fails_the_check() -> None:
    model = _ill_conditioned()
    with pytest.raises(ParityError, match=r"ONNX Runtime failed \(batch 3, time 1\): "):
        check_parity(model, _ignores_h0(export_onnx(model)), WINDOW, batches=(1, 3))
