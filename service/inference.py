"""The inference core: numpy in, numpy out, no web framework.

preprocess (scale into model units) -> run (one `session.run` per group of series of
equal length) -> postprocess (unscale into original units), then an optional rollout
for multi-step forecasts that feeds each prediction back as the next input.

A long group runs as consecutive `session.run` calls of at most `chunk_steps` steps
(batch x time steps), each starting from the state the previous one reached: the same
recurrence, so the same answer, but ONNX Runtime's working buffers (an LSTM keeps
batch x time x 4 hidden floats of gates) stay the size of one chunk instead of the
whole sequence, so its memory arena keeps no more than that after a maximum-size
request. A budget in steps rather than in time steps keeps a wide batch's buffers as
small as a narrow one's, and lets a single long series run whole (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.repository import LoadedModel
from service.transforms import StreamTransform


@dataclass(slots=True)
class SeriesInput:
    """One series to predict over, in original units, already checked (service.inputs)."""

    values: np.ndarray  # (time, features) float32 (float64: scale wide), time >= 1
    h: np.ndarray | None = None  # (num_layers, hidden) float32; None starts from zeros
    c: np.ndarray | None = None  # (num_layers, hidden) float32; LSTM only
    horizon: int = 1  # > 1 only for a model whose targets are its features
    # Transformed models with a lag (service.transforms): the last observed target values
    # (k <= lag, targets) float32 the state carries; None: a fresh stream.
    levels: np.ndarray | None = None
    # Dated models (service.calendar): the calendar inputs (horizon - 1, columns) of the
    # rolled-out steps, and the grid position of the last value (None: no time known).
    future: np.ndarray | None = None
    time: int | None = None
    # Normalized-conformal intervals (service.transforms.ErrorScale): the scale state
    # (2, targets) float32 the state carries; None: a fresh one.
    scale: np.ndarray | None = None


@dataclass(slots=True)
class SeriesOutput:
    """What one series gives back, in original units."""

    predictions: np.ndarray  # (time, targets): prediction of step t+1 made after step t
    forecast: np.ndarray  # (horizon, targets)
    h: np.ndarray  # (num_layers, hidden): state after the last observed value
    c: np.ndarray | None  # (num_layers, hidden) for LSTM, else None
    levels: np.ndarray | None = None  # (<= lag, targets): transformed models with a lag
    time: int | None = None  # dated models: the grid position of the last observed value
    scale: np.ndarray | None = None  # normalized-conformal intervals: the scale state after


def work_steps(inputs: Sequence[SeriesInput]) -> int:
    """Recurrent steps a request costs: observed values plus rolled-out forecast steps."""
    if len(inputs) == 1:  # the common case, without a generator
        return int(inputs[0].values.shape[0]) + inputs[0].horizon - 1
    return sum(s.values.shape[0] + s.horizon - 1 for s in inputs)


# Steps (batch x time) per `session.run` by default: SEQCAST_CHUNK_STEPS.
DEFAULT_CHUNK_STEPS = 32_768


class InferenceCore:
    """Runs one loaded model over a batch of series (inputs checked by service.inputs)."""

    def __init__(self, model: LoadedModel, chunk_steps: int = DEFAULT_CHUNK_STEPS) -> None:
        self.model = model
        self.chunk_steps = chunk_steps  # batch x time steps per ONNX Runtime run, at most
        self._lstm = model.manifest.is_lstm
        self._num_layers, self._hidden = model.state_shape
        self._output_names = ["y", "h_n", "c_n"] if self._lstm else ["y", "h_n"]
        self._timed = model.timed
        # Inputs after the targets that rolled-out steps take from SeriesInput.future
        # (calendar inputs), scaled as the model's inputs are.
        known = model.manifest.architecture.input_size - model.client_inputs
        self._known_mul = model.x_mul[model.client_inputs :] if known else None
        self._known_add = model.x_add[model.client_inputs :] if known else None
        t = model.manifest.transform
        # None for a model without a transform: its requests take the plain path below.
        self._transform = (
            StreamTransform(model.manifest, t)
            if t is not None and (t.lag > 0 or t.log is not None)
            else None
        )

    def predict(
        self, inputs: Sequence[SeriesInput], runs: list[tuple[int, int]] | None = None
    ) -> list[SeriesOutput]:
        """Predictions, forecast and final state for every series, in input order.

        `runs`, when given, gets the ONNX Runtime runs made, as (series per run, number of
        such runs): what the metrics count.
        """
        if self._transform is not None:
            results = self._predict_transformed(self._transform, inputs, runs)
        else:
            results = self._predict(inputs, runs)
        if self._timed:
            for s, out in zip(inputs, results, strict=True):
                out.time = s.time
        scale = self.model.error_scale
        if scale is not None:  # the intervals' running scale, whether asked for or not
            scale.update_all(inputs, results)
        return results

    def _predict_transformed(
        self,
        t: StreamTransform,
        inputs: Sequence[SeriesInput],
        runs: list[tuple[int, int]] | None,
    ) -> list[SeriesOutput]:
        """Values into model units, the plain path on them, and every answer back in levels."""
        prepared = [t.prepare(s.values, s.levels) for s in inputs]
        stepped = [i for i, p in enumerate(prepared) if p.model_values.shape[0] > 0]
        inner = self._predict(
            [
                SeriesInput(
                    prepared[i].model_values,
                    inputs[i].h,
                    inputs[i].c,
                    inputs[i].horizon,
                    future=inputs[i].future,
                )
                for i in stepped
            ],
            runs,
        )
        done = dict(zip(stepped, inner, strict=True))
        results = []
        for i, (s, p) in enumerate(zip(inputs, prepared, strict=True)):
            out = done.get(i)
            if out is None:  # only levels were filled: no model step, no prediction yet
                h = (
                    s.h
                    if s.h is not None
                    else np.zeros((self._num_layers, self._hidden), np.float32)
                )
                c = s.c
                if self._lstm and c is None:
                    c = np.zeros((self._num_layers, self._hidden), np.float32)
                empty = np.empty((0, t.targets))
                results.append(
                    SeriesOutput(
                        predictions=t.predictions(p, empty),
                        forecast=np.full((s.horizon, t.targets), np.nan),
                        h=h,
                        c=c,
                        levels=p.levels,
                    )
                )
                continue
            out.predictions = t.predictions(p, out.predictions)
            out.forecast = t.forecast(p, out.forecast)
            out.levels = p.levels
            results.append(out)
        return results

    def _predict(
        self, inputs: Sequence[SeriesInput], runs: list[tuple[int, int]] | None = None
    ) -> list[SeriesOutput]:
        results: list[SeriesOutput] = [None] * len(inputs)  # type: ignore[list-item]
        # Series that need more forecast steps, with their scaled last prediction and state.
        pending: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]] = []
        by_length: dict[int, list[int]] = {}
        for i, s in enumerate(inputs):
            by_length.setdefault(s.values.shape[0], []).append(i)
        for indices in by_length.values():
            y, h_n, c_n = self._run_group(inputs, indices, runs)  # (B, T, O), (L, B, H)
            preds = y * self.model.y_scale + self.model.y_offset  # original units
            # (B, L, H): one contiguous (L, H) block per series, as clients get it.
            hs = h_n.transpose(1, 0, 2) if len(indices) == 1 else h_n.transpose(1, 0, 2).copy()
            cs = None
            if c_n is not None:
                cs = c_n.transpose(1, 0, 2) if len(indices) == 1 else c_n.transpose(1, 0, 2).copy()
            for b, i in enumerate(indices):
                h, c = hs[b], cs[b] if cs is not None else None
                results[i] = SeriesOutput(predictions=preds[b], forecast=preds[b, -1:], h=h, c=c)
                if inputs[i].horizon > 1:
                    pending.append((i, y[b, -1], h, c))
        if pending:
            self._roll(inputs, pending, results, runs)
        return results

    def _run_group(
        self,
        inputs: Sequence[SeriesInput],
        indices: list[int],
        runs: list[tuple[int, int]] | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if len(indices) == 1:
            x = inputs[indices[0]].values[None]  # (1, T, F)
        else:
            x = np.stack([inputs[i].values for i in indices])  # (B, T, F)
        x = self._scale(x)
        h0 = self._initial(inputs, indices, "h")
        c0 = self._initial(inputs, indices, "c") if self._lstm else None
        span = max(1, self.chunk_steps // x.shape[0])  # time steps per run
        if runs is not None:
            runs.append((x.shape[0], max(1, -(-x.shape[1] // span))))
        if x.shape[1] <= span:
            return self._run(x, h0, c0)
        return self._run_chunked(x, h0, c0, span)

    def _run_chunked(
        self, x: np.ndarray, h: np.ndarray, c: np.ndarray | None, span: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One run over `x` as consecutive runs of `span` time steps, carrying the state."""
        batch, steps, _ = x.shape
        y = np.empty((batch, steps, self.model.manifest.architecture.output_size), np.float32)
        for start in range(0, steps, span):
            end = start + span
            # A slice of the time axis is not contiguous for batch > 1; ORT needs it to be.
            part = np.ascontiguousarray(x[:, start:end])  # (B, <= chunk, F)
            y[:, start:end], h, c = self._run(part, h, c)
        return y, h, c

    def _run(
        self, x: np.ndarray, h0: np.ndarray, c0: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        feeds = {"x": x, "h0": h0}
        if c0 is not None:
            feeds["c0"] = c0
        outputs = self.model.ort_session.run(self._output_names, feeds)
        return outputs[0], outputs[1], outputs[2] if c0 is not None else None

    def _scale(self, x: np.ndarray) -> np.ndarray:
        m = self.model
        if x.dtype == np.float32:
            # The checks (service.inputs) left these in float32 only when float32
            # arithmetic cannot overflow scaling them.
            scaled: np.ndarray = x * m.x_mul + m.x_add
            return scaled
        # Values near the edge of the range (float64 from service.inputs): scale wide.
        return (x * m.x_mul64 + m.x_add64).astype(np.float32)  # type: ignore[no-any-return]

    def _initial(self, inputs: Sequence[SeriesInput], indices: list[int], which: str) -> np.ndarray:
        if len(indices) == 1:
            given = getattr(inputs[indices[0]], which)
            if given is not None:
                return given[:, None, :]  # type: ignore[no-any-return]  # (L, 1, H) view
        states = [getattr(inputs[i], which) for i in indices]
        if all(s is not None for s in states):
            return np.stack(states, axis=1)  # (L, B, H) in one copy: the common case
        state = np.zeros((self._num_layers, len(indices), self._hidden), np.float32)
        for b, given in enumerate(states):
            if given is not None:
                state[:, b, :] = given
        return state

    def _roll(
        self,
        inputs: Sequence[SeriesInput],
        pending: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]],
        results: list[SeriesOutput],
        runs: list[tuple[int, int]] | None,
    ) -> None:
        """Feed predictions back for horizon - 1 more steps, all pending series in one batch."""
        steps = max(inputs[i].horizon for i, _, _, _ in pending) - 1
        if runs is not None:
            runs.append((len(pending), steps))
        x = np.stack([y_last for _, y_last, _, _ in pending])[:, None, :]  # (B, 1, O)
        known = None
        if self._known_mul is not None:  # calendar inputs of the rolled-out steps, scaled
            known = np.zeros((len(pending), steps, self._known_mul.shape[0]), np.float32)
            for b, (i, _, _, _) in enumerate(pending):
                future = inputs[i].future
                if future is not None:
                    known[b, : future.shape[0]] = future * self._known_mul + self._known_add
            x = np.concatenate([x, known[:, :1]], axis=2)  # (B, 1, F)
        h = np.stack([hs for _, _, hs, _ in pending], axis=1)  # (L, B, H)
        c = None
        if self._lstm:
            c = np.stack([cs for _, _, _, cs in pending if cs is not None], axis=1)
        outputs = self.model.manifest.architecture.output_size
        rolled = np.empty((len(pending), steps, outputs), dtype=np.float32)  # (B, S, O)
        for k in range(steps):
            y, h, c = self._run(x, h, c)
            rolled[:, k] = y[:, 0]
            if known is None:
                x = y
            elif k + 1 < steps:
                x = np.concatenate([y, known[:, k + 1 : k + 2]], axis=2)
        forecasts = rolled * self.model.y_scale + self.model.y_offset
        for b, (i, _, _, _) in enumerate(pending):
            first = results[i]
            first.forecast = np.concatenate([first.forecast, forecasts[b, : inputs[i].horizon - 1]])
