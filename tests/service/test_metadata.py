"""Liveness, readiness, model metadata, and the offline API docs."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient


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


def test_openapi_describes_the_predict_body(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/v1/models/{name}/predict"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"series", "return_predictions", "return_state"}
    # Declared inline, nested models included: nothing points at a missing component.
    series = body["properties"]["series"]["items"]
    assert set(series["properties"]) == {"values", "state", "horizon"}
    assert "$ref" not in json.dumps(body)
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok == "#/components/schemas/PredictResponse"
    assert "422" in post["responses"]
