"""Liveness, readiness, model metadata, and the offline API docs."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.openapi import scaled_bounds
from service.api.schemas import F32_LIMIT, H_LIMIT
from service.repository import F32_MAX
from tests.service.sessions_support import MakeClient

# The tiny models of tests/conftest.py and their versions.
SERVED = {
    "tiny-gru": [1],
    "tiny-lstm": [1, 2],
    "tiny-rnn": [1],
    "two-in-one-out": [1],
    "two-in-two-out": [1],
}


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_when_every_model_loaded(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["failures"] == []
    assert "tiny-lstm/1" in body["models"]
    assert "tiny-lstm/2" in body["models"]


def test_list_models(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    names = [m["name"] for m in body["models"]]
    assert names == sorted(
        ["tiny-rnn", "tiny-lstm", "tiny-gru", "two-in-one-out", "two-in-two-out"]
    )
    lstm = next(m for m in body["models"] if m["name"] == "tiny-lstm")
    assert lstm["versions"] == [1, 2]
    assert lstm["default_version"] == 2
    assert lstm["latest"]["version"] == 2


@pytest.mark.parametrize(
    ("name", "cell", "state_shape", "max_horizon"),
    [
        ("tiny-rnn", "rnn", {"h": [1, 6], "c": None}, 512),
        ("tiny-lstm", "lstm", {"h": [2, 8], "c": [2, 8]}, 512),
        ("tiny-gru", "gru", {"h": [2, 5], "c": None}, 512),
        ("two-in-one-out", "gru", {"h": [1, 4], "c": None}, 1),
    ],
)
def test_model_metadata(
    client: TestClient, name: str, cell: str, state_shape: dict, max_horizon: int
) -> None:
    body = client.get(f"/v1/models/{name}").json()
    info = body["latest"]
    assert info["name"] == name
    assert info["cell"] == cell
    assert info["state_shape"] == state_shape
    assert info["max_horizon"] == max_horizon
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["window"] == 20
    assert "streaming" in info["metrics"]["test"]
    assert re.fullmatch(r"[0-9a-f]{64}", info["onnx"]["sha256"])


def test_version_metadata(client: TestClient) -> None:
    info = client.get("/v1/models/two-in-one-out/versions/1").json()
    assert info["features"] == ["a", "b"]
    assert info["targets"] == ["a"]
    assert info["version"] == 1
    old = client.get("/v1/models/tiny-lstm/versions/1").json()
    assert old["version"] == 1


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("/v1/models/nope", "model_not_found"),
        ("/v1/models/nope/versions/1", "model_not_found"),
        ("/v1/models/tiny-lstm/versions/3", "version_not_found"),
    ],
)
def test_unknown_metadata(client: TestClient, url: str, code: str) -> None:
    response = client.get(url)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == code


def test_docs_use_only_local_assets(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    html = response.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(
        r"""url: ['"]([^'"]+)['"]""", html
    )
    assert urls, html
    assert not [u for u in urls if "//" in u], urls
    assert "cdn" not in html.lower()
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert "/static/swagger-ui/swagger-ui-bundle.js" in urls


def body_schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    schema: dict[str, Any] = document["paths"][path]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    return schema


def test_openapi_lists_every_models_own_paths(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    posts = sorted(path for path, item in document["paths"].items() if "post" in item)
    per_model = []
    for name, versions in SERVED.items():
        per_model += [f"/v1/models/{name}/predict", f"/v1/models/{name}/sessions"]
        for v in versions:
            per_model += [
                f"/v1/models/{name}/versions/{v}/predict",
                f"/v1/models/{name}/versions/{v}/sessions",
            ]
    assert posts == sorted([*per_model, "/v1/sessions/{session_id}/observe"])
    # GET routes stay templated; the server still answers any name (404 when unknown).
    assert "/v1/models/{name}/versions/{version}" in document["paths"]
    assert client.post("/v1/models/nope/predict", json={}).status_code == 404
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_openapi_describes_the_predict_body(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    post = document["paths"]["/v1/models/tiny-lstm/predict"]["post"]
    assert "parameters" not in post  # the path names the model: nothing left to fill in
    body = body_schema(document, "/v1/models/tiny-lstm/predict")
    assert set(body["properties"]) == {"series", "return_predictions", "return_state"}
    assert body["additionalProperties"] is False
    assert body["properties"]["series"]["maxItems"] == 256
    series = body["properties"]["series"]["items"]
    assert set(series["properties"]) == {"values", "state", "horizon"}
    assert series["properties"]["horizon"]["maximum"] == 512
    # The default path is the highest version's: its state, and no other, is taken back.
    state = series["properties"]["state"]["anyOf"][0]
    assert state["properties"]["version"]["const"] == 2
    assert state["properties"]["model"]["const"] == "tiny-lstm"
    assert state["required"] == ["model", "version", "h", "c"]
    h = state["properties"]["h"]
    assert (h["minItems"], h["maxItems"]) == (2, 2)
    assert (h["items"]["minItems"], h["items"]["maxItems"]) == (8, 8)
    assert h["items"]["items"]["maximum"] == H_LIMIT
    # Declared inline, nested schemas included: nothing points at a missing component.
    assert "$ref" not in json.dumps(body)
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok == "#/components/schemas/PredictResponse"
    assert {"400", "403", "404", "413", "415", "422"} <= set(post["responses"])
    assert "401" not in post["responses"]  # keys are off
    version = document["paths"]["/v1/models/tiny-lstm/versions/1/predict"]["post"]
    assert version["operationId"] == "predict_version_tiny-lstm_v1"


@pytest.mark.parametrize(
    ("path", "rows", "horizon", "c"),
    [
        ("/v1/models/tiny-rnn/predict", 1, 512, {"type": "null"}),
        ("/v1/models/tiny-gru/versions/1/predict", 1, 512, {"type": "null"}),
        ("/v1/models/two-in-one-out/predict", 2, 1, {"type": "null"}),
        ("/v1/models/two-in-two-out/predict", 2, 512, "required"),
    ],
)
def test_each_models_body_says_what_it_takes(
    client: TestClient, path: str, rows: int, horizon: int, c: object
) -> None:
    series = body_schema(client.get("/openapi.json").json(), path)["properties"]["series"]
    item = series["items"]["properties"]
    values = item["values"]
    forms = values.get("anyOf", [values])
    if rows == 1:  # numbers, or rows of one number
        assert forms[0]["items"]["type"] == "number"
    row = forms[-1]["items"]
    assert (row["minItems"], row["maxItems"]) == (rows, rows)
    assert all(form["maxItems"] == 10_000 for form in forms)
    assert item["horizon"]["maximum"] == horizon
    state = item["state"]["anyOf"][0]
    if c == "required":
        assert "c" in state["required"]
    else:
        assert state["properties"]["c"]["description"].startswith("absent or null")
        assert {k: v for k, v in state["properties"]["c"].items() if k != "description"} == c


def test_generic_bodies_carry_the_settings_limits(make_client: MakeClient) -> None:
    with make_client(max_values_per_series=50, max_horizon=7, max_series_per_request=3) as c:
        document = c.get("/openapi.json").json()
    observe = body_schema(document, "/v1/sessions/{session_id}/observe")["properties"]
    assert observe["horizon"]["maximum"] == 7
    assert [form["maxItems"] for form in observe["values"]["anyOf"]] == [50, 50]
    predict = body_schema(document, "/v1/models/tiny-gru/predict")
    assert predict["properties"]["series"]["maxItems"] == 3
    # Path and query parameters refused by FastAPI are answered in the one error shape.
    get = document["paths"]["/v1/models/{name}/versions/{version}"]["get"]
    assert get["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_with_keys_every_operation_but_health_needs_one(make_client: MakeClient) -> None:
    with make_client(api_keys=f"alice:{'k' * 20}") as c:
        document = c.get("/openapi.json", headers={"X-API-Key": "k" * 20}).json()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path in ("/healthz", "/readyz"):
                assert "security" not in operation
                assert "401" not in operation["responses"]
            else:
                assert operation["security"] == [{"bearer": []}, {"apiKey": []}], (method, path)
                assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]


@pytest.mark.parametrize(
    ("mul", "add"),
    [
        (1e3, -1e33),  # standard scaler, mean 1e30, std 1e-3
        (5e4, 0.5),  # minmax scaler over [-1e-5, 1e-5]
        (1.0, 0.0),  # scale 1: only float32's own range limits
        (-7.25, 3e30),
    ],
)
def test_scaled_bounds_are_exact_to_the_last_double(mul: float, add: float) -> None:
    """Every double within the bounds scales (as the server rounds and scales it) to
    within float32; the next double beyond either bound does not."""

    def taken(x: float) -> bool:
        if abs(x) > F32_LIMIT:
            return False
        with np.errstate(over="ignore"):
            value = np.float32(x)
        return bool(abs(float(value) * mul + add) <= F32_MAX)

    ((low, high),) = scaled_bounds(np.array([mul]), np.array([add]))
    assert low < high
    assert taken(low)
    assert taken(high)
    assert not taken(math.nextafter(low, -math.inf))
    assert not taken(math.nextafter(high, math.inf))


def test_the_document_is_built_once_per_repository(client: TestClient) -> None:
    first = client.get("/openapi.json")
    assert first.content == client.get("/openapi.json").content
    assert first.headers["content-type"] == "application/json"
