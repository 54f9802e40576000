"""The predict answer from raw body bytes to raw JSON bytes, shared by both ways in.

Both the FastAPI route (service.api.routes.predict) and the direct ASGI path
(service.api.fast_path) call `answer_predict`, so they give identical answers.
"""

from __future__ import annotations

import orjson

from service.api.deps import find_model
from service.api.encoding import predict_json
from service.api.errors import ApiError
from service.api.parsing import parse_predict_request, series_inputs
from service.inference import InferenceInputError, SeriesInput, SeriesOutput
from service.repository import LoadedModel, ModelRepository
from service.runner import ModelRunner
from service.settings import Settings

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


async def answer_predict(
    repository: ModelRepository,
    settings: Settings,
    runner: ModelRunner,
    name: str,
    version: int | None,
    body: bytes,
) -> bytes:
    """The JSON answer to a predict request, or an ApiError naming what is wrong."""
    model = find_model(repository, name, version)
    request = parse_predict_request(body)
    inputs = series_inputs(request, model, settings)
    outputs = await forecast(runner, model, inputs)
    answer = predict_json(
        model,
        outputs,
        return_predictions=request.return_predictions,
        return_state=request.return_state,
    )
    return orjson.dumps(answer, option=_OPTIONS)


async def forecast(
    runner: ModelRunner, model: LoadedModel, inputs: list[SeriesInput]
) -> list[SeriesOutput]:
    """Run the inference core (service.runner), its input errors as a 422 naming the field."""
    try:
        return await runner.run(model, inputs)
    except InferenceInputError as exc:
        field = f"series[{exc.series}]" + (
            f".values[{exc.index}]" if exc.index is not None else ".horizon"
        )
        raise ApiError(422, "invalid_value", f"{field}: {exc}", field) from None
