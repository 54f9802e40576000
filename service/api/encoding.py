"""JSON answers encoded by orjson straight from numpy arrays (no generic encoder)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from service.calendar import forecast_timestamps
from service.inference import SeriesOutput
from service.intervals import intervals
from service.repository import LoadedModel
from service.sessions.manager import StepResult

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


def state_json(
    model: LoadedModel,
    h: np.ndarray,
    c: np.ndarray | None,
    levels: np.ndarray | None = None,
    time: int | None = None,
    scale: np.ndarray | None = None,
) -> dict[str, Any]:
    """A state as clients send it back: bound to the model name and version."""
    state: dict[str, Any] = {"model": model.name, "version": model.version, "h": h}
    if c is not None:
        state["c"] = c
    if levels is not None:
        state["levels"] = rows_json(levels)
    if time is not None and model.manifest.time is not None:
        state["time"] = model.manifest.time.stamp(time).isoformat()
    if scale is not None:
        last = scale[1]
        state["scale"] = {
            "mean_square": scale[0],
            "last": None if np.isnan(last).any() else last,
        }
    return state


def predict_json(
    model: LoadedModel,
    outputs: Sequence[SeriesOutput],
    *,
    return_predictions: bool,
    return_state: bool,
    interval_levels: Sequence[Sequence[float] | None] | None = None,
) -> dict[str, Any]:
    series = []
    for i, out in enumerate(outputs):
        item: dict[str, Any] = {"forecast": rows_json(out.forecast)}
        if return_state:
            item["state"] = state_json(model, out.h, out.c, out.levels, out.time, out.scale)
        if return_predictions:
            item["predictions"] = rows_json(out.predictions)
        if interval_levels is not None and interval_levels[i]:
            item["intervals"] = intervals(model, out.forecast, interval_levels[i] or (), out.scale)
        if out.time is not None:
            item["forecast_timestamps"] = forecast_timestamps(model, out.time, len(out.forecast))
        series.append(item)
    return {"model": model.name, "version": model.version, "series": series}


def rows_json(rows: np.ndarray) -> np.ndarray:
    """(time, targets) as clients get it: flat for a single target."""
    return np.ascontiguousarray(rows[:, 0] if rows.shape[1] == 1 else rows)


def observe_json(
    step: StepResult,
    model: LoadedModel | None = None,
    interval_levels: Sequence[float] | None = None,
) -> bytes:
    """A session step's answer; a replayed step encodes to the very same bytes."""
    answer: dict[str, Any] = {
        "session": step.session,
        "model": step.model,
        "version": step.version,
        "start": step.start,
        "offset": step.offset,
        "predictions": rows_json(step.predictions),
        "forecast": rows_json(step.forecast),
    }
    if model is not None and interval_levels:
        answer["intervals"] = intervals(model, step.forecast, interval_levels, step.scale)
    if step.forecast_timestamps is not None:
        answer["forecast_timestamps"] = step.forecast_timestamps
    return orjson.dumps(answer, option=_OPTIONS)
