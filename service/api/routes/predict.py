"""Forecasts over one or many series, state in and out.

With `fast_path` on (the default) requests to these paths are answered by
service.api.fast_path before FastAPI's routing; these routes then serve as the
OpenAPI description and as the path taken when `fast_path` is off. Both call the
same `answer_predict`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.deps import RepositoryDep, RunnerDep, SettingsDep
from service.api.predicting import answer_predict
from service.api.schemas import ErrorResponse, PredictResponse

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
    "/{name}/predict", response_model=PredictResponse, responses=_ERRORS, openapi_extra=_BODY
)
async def predict(
    name: str,
    request: Request,
    repository: RepositoryDep,
    settings: SettingsDep,
    runner: RunnerDep,
) -> Response:
    """Forecast with the default (highest) version of a model."""
    answer = await answer_predict(repository, settings, runner, name, None, await request.body())
    return Response(answer, media_type="application/json")


@router.post(
    "/{name}/versions/{version}/predict",
    response_model=PredictResponse,
    responses=_ERRORS,
    openapi_extra=_BODY,
)
async def predict_version(
    name: str,
    version: int,
    request: Request,
    repository: RepositoryDep,
    settings: SettingsDep,
    runner: RunnerDep,
) -> Response:
    """Forecast with one version of a model."""
    answer = await answer_predict(repository, settings, runner, name, version, await request.body())
    return Response(answer, media_type="application/json")
