"""Forecasts over one or many series, state in and out."""

from __future__ import annotations

import orjson

from service.api.body_routes import Answer, Call, model_routes, parse_body
from service.api.encoding import predict_json
from service.api.schemas import PredictRequest, PredictResponse
from service.inputs import InputError, check_intervals, series_inputs

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


async def predict(call: Call) -> Answer:
    """The JSON answer to a predict request; an error names what is wrong."""
    model = call.state.find_model(call.params["name"], call.params.get("version"))
    request = parse_body(PredictRequest, call.body)
    inputs = series_inputs(request.series, model, call.state.limits)
    levels = None
    if any(s.intervals for s in request.series):
        levels = [s.intervals for s in request.series]
        for i, s in enumerate(request.series):
            try:
                check_intervals(s.intervals, s.horizon, model, "intervals")
            except InputError as exc:
                where = f"series[{i}]."
                raise InputError(exc.code, where + exc.message, where + (exc.field or "")) from None
    outputs = await call.state.runner.run(model, inputs)
    answer = predict_json(
        model,
        outputs,
        return_predictions=request.return_predictions,
        return_state=request.return_state,
        interval_levels=levels,
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
