"""The baseline the predict benchmark compares against: FastAPI + ONNX Runtime done plainly.

A pydantic request model parsed by FastAPI, a sync endpoint (FastAPI's thread pool),
`.tolist()` in a dict answer (FastAPI's generic encoder), one `session.run` per series.
It does the same work as seqcast's predict: scale, run, unscale, forecast and state.

    BASELINE_MODEL=models/sine-lstm/1 uvicorn bench.baseline_app:create_app --factory
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel


class State(BaseModel):
    model: str
    version: int
    h: list[list[float]]
    c: list[list[float]] | None = None


class Series(BaseModel):
    values: list[float]
    state: State | None = None
    horizon: int = 1


class PredictRequest(BaseModel):
    series: list[Series]
    return_state: bool = True


def _affine(manifest: dict[str, Any], column: str) -> tuple[float, float]:
    s = manifest["scalers"][column]
    return (s["min"], s["max"] - s["min"]) if s["kind"] == "minmax" else (s["mean"], s["std"])


def create_app() -> FastAPI:
    directory = Path(os.environ["BASELINE_MODEL"])
    manifest = json.loads((directory / "manifest.json").read_text())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(directory / manifest["onnx"]["file"]), options, providers=["CPUExecutionProvider"]
    )
    arch = manifest["architecture"]
    layers, hidden, lstm = arch["num_layers"], arch["hidden_size"], arch["cell"] == "lstm"
    x_off, x_scale = _affine(manifest, manifest["features"][0])
    y_off, y_scale = _affine(manifest, manifest["targets"][0])
    app = FastAPI()

    @app.post("/v1/models/{name}/predict")
    def predict(name: str, request: PredictRequest) -> dict[str, Any]:
        out = []
        for s in request.series:
            x = ((np.array(s.values, dtype=np.float32) - x_off) / x_scale).reshape(1, -1, 1)
            zeros = [[0.0] * hidden] * layers
            h0 = np.array(s.state.h if s.state else zeros, dtype=np.float32)[:, None, :]
            feeds = {"x": x.astype(np.float32), "h0": h0}
            if lstm:
                c = s.state.c if s.state and s.state.c else zeros
                feeds["c0"] = np.array(c, dtype=np.float32)[:, None, :]
            y, *state = session.run(None, feeds)
            item: dict[str, Any] = {"forecast": (y[0, -1:, 0] * y_scale + y_off).tolist()}
            if request.return_state:
                item["state"] = {"model": name, "version": manifest["version"]}
                item["state"]["h"] = state[0][:, 0, :].tolist()
                if lstm:
                    item["state"]["c"] = state[1][:, 0, :].tolist()
            out.append(item)
        return {"model": name, "version": manifest["version"], "series": out}

    return app
