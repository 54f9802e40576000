"""The predict answer from raw body bytes to raw JSON bytes, shared by both ways in.

Both the FastAPI route (service.api.routes.predict) and the direct ASGI path
(service.api.fast_path) call `answer_predict`, so they give identical answers.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import orjson
from starlette.concurrency import run_in_threadpool

from service.api.deps import find_model
from service.api.encoding import predict_json
from service.api.errors import ApiError
from service.api.parsing import parse_predict_request, series_inputs
from service.inference import Forecaster, InferenceInputError, SeriesInput, SeriesOutput, work_steps
from service.repository import LoadedModel, ModelRepository
from service.settings import Settings

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


async def answer_predict(
    repository: ModelRepository,
    settings: Settings,
    name: str,
    version: int | None,
    body: bytes,
) -> bytes:
    """The JSON answer to a predict request, or an ApiError naming what is wrong."""
    model = find_model(repository, name, version)
    request = parse_predict_request(body)
    inputs = series_inputs(request, model, settings)
    outputs = await forecast(model, inputs, settings)
    answer = predict_json(
        model,
        outputs,
        return_predictions=request.return_predictions,
        return_state=request.return_state,
    )
    return orjson.dumps(answer, option=_OPTIONS)


_FORECASTERS: WeakKeyDictionary[LoadedModel, Forecaster] = WeakKeyDictionary()


def forecaster_for(model: LoadedModel) -> Forecaster:
    """The model's Forecaster, built once (it precomputes scaling vectors)."""
    forecaster = _FORECASTERS.get(model)
    if forecaster is None:
        forecaster = _FORECASTERS[model] = Forecaster(model)
    return forecaster


async def forecast(
    model: LoadedModel, inputs: list[SeriesInput], settings: Settings
) -> list[SeriesOutput]:
    """Run the inference core: inline when the work is small, else in the thread pool.

    A small recurrent model costs microseconds per step, less than the hop to a worker
    thread, so small requests run on the event loop (`inline_max_steps`, measured in
    docs/benchmarks.md); larger ones go to the thread pool and never block the loop.
    """
    forecaster = forecaster_for(model)
    try:
        if work_steps(inputs) <= settings.inline_max_steps:
            return forecaster.predict(inputs)
        return await run_in_threadpool(forecaster.predict, inputs)
    except InferenceInputError as exc:
        field = f"series[{exc.series}]" + (
            f".values[{exc.index}]" if exc.index is not None else ".horizon"
        )
        raise ApiError(422, "invalid_value", f"{field}: {exc}", field) from None
