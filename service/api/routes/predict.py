"""Forecasts over one or many series, state in and out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from service.api.deps import find_model
from service.api.encoding import OrjsonResponse, predict_json
from service.api.errors import ApiError
from service.api.parsing import parse_predict_request, series_inputs
from service.api.schemas import ErrorResponse, PredictResponse
from service.inference import Forecaster, InferenceInputError, SeriesInput, SeriesOutput, work_steps
from service.repository import LoadedModel, ModelRepository
from service.settings import Settings

router = APIRouter(prefix="/v1/models", tags=["predict"])

# The body is read and validated by hand (pydantic's Rust JSON path), so OpenAPI is told
# its schema here; PredictRequest is added to the components by the app factory.
_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (404, 413, 422)
}


@router.post(
    "/{name}/predict",
    response_model=PredictResponse,
    responses=_ERRORS,
    openapi_extra=_BODY,
)
async def predict(name: str, request: Request) -> OrjsonResponse:
    """Forecast with the default (highest) version of a model."""
    return await _predict(request, name, None)


@router.post(
    "/{name}/versions/{version}/predict",
    response_model=PredictResponse,
    responses=_ERRORS,
    openapi_extra=_BODY,
)
async def predict_version(name: str, version: int, request: Request) -> OrjsonResponse:
    """Forecast with one version of a model."""
    return await _predict(request, name, version)


async def _predict(request: Request, name: str, version: int | None) -> OrjsonResponse:
    repository: ModelRepository = request.state.repository
    settings: Settings = request.state.settings
    model = find_model(repository, name, version)
    body = parse_predict_request(await request.body())
    inputs = series_inputs(body, model, settings)
    outputs = await forecast(model, inputs, settings)
    return OrjsonResponse(
        predict_json(
            model,
            outputs,
            return_predictions=body.return_predictions,
            return_state=body.return_state,
        )
    )


async def forecast(
    model: LoadedModel, inputs: list[SeriesInput], settings: Settings
) -> list[SeriesOutput]:
    """Run the inference core: inline when the work is small, else in the thread pool.

    A small recurrent model costs a few microseconds per step, less than the hop to a
    worker thread, so small requests run on the event loop; larger ones must not block it.
    """
    forecaster = Forecaster(model)
    try:
        if work_steps(inputs) <= settings.inline_max_steps:
            return forecaster.predict(inputs)
        return await run_in_threadpool(forecaster.predict, inputs)
    except InferenceInputError as exc:
        field = f"series[{exc.series}]" + (
            f".values[{exc.index}]" if exc.index is not None else ".horizon"
        )
        raise ApiError(422, "invalid_value", f"{field}: {exc}", field) from None
