"""Forecasts over one or many series, state in and out."""

from __future__ import annotations

import orjson

from service.api.body_routes import Answer, Call, model_routes, parse_body
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


ROUTES = model_routes(
    "predict",
    "Forecast with {which} of a model.",
    request=PredictRequest,
    response=PredictResponse,
    handler=predict,
    tags=("predict",),
)
