"""Forecasts over one or many series, state in and out."""

from __future__ import annotations

import orjson

from service.api.body_routes import Answer, BodyRoute, Call, parse_body
from service.api.encoding import predict_json
from service.api.schemas import PredictRequest, PredictResponse
from service.inputs import series_inputs

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


async def predict(call: Call) -> Answer:
    """The JSON answer to a predict request; an error names what is wrong."""
    model = call.state.find_model(call.params["name"], call.params.get("version"))
    request = parse_body(PredictRequest, call.body)
    inputs = series_inputs(request.series, model, call.state.limits)
    outputs = await call.state.runner.run(model, inputs)
    answer = predict_json(
        model,
        outputs,
        return_predictions=request.return_predictions,
        return_state=request.return_state,
    )
    return Answer(orjson.dumps(answer, option=_OPTIONS))


ROUTES = [
    BodyRoute(
        path="/v1/models/{name}/predict",
        params={"name": str},
        request=PredictRequest,
        response=PredictResponse,
        handler=predict,
        summary="Forecast with the default (highest) version of a model.",
        tags=("predict",),
        name="predict",
    ),
    BodyRoute(
        path="/v1/models/{name}/versions/{version}/predict",
        params={"name": str, "version": int},
        request=PredictRequest,
        response=PredictResponse,
        handler=predict,
        summary="Forecast with one version of a model.",
        tags=("predict",),
        name="predict_version",
    ),
]
