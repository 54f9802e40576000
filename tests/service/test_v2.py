"""The Open Inference Protocol under /v2, in process: metadata, infer in JSON and binary
(answers equal /v1's), every refusal a 400 in the protocol's error form, the front door."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.sessions_support import MakeClient

# (model, features, targets, LSTM, can roll out)
MODELS = [
    ("tiny-rnn", 1, 1, False, True),
    ("tiny-lstm", 1, 1, True, True),
    ("tiny-gru", 1, 1, False, True),
    ("two-in-one-out", 2, 1, False, False),
    ("two-in-two-out", 2, 2, True, True),
]
BINARY = "application/octet-stream"


@pytest.fixture(scope="module")
def client(make_client: MakeClient) -> Iterator[TestClient]:
    with make_client(max_series_per_request=4, max_values_per_series=50, max_horizon=8) as c:
        yield c


def datatype(array: np.ndarray) -> str:
    return {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64"}[array.dtype]


def infer_json(
    inputs: dict[str, np.ndarray],
    parameters: dict[str, Any] | None = None,
    outputs: list[str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [
            {"name": n, "shape": list(a.shape), "datatype": datatype(a), "data": a.ravel().tolist()}
            for n, a in inputs.items()
        ]
    }
    if parameters:
        body["parameters"] = parameters
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return body


def binary_body(
    inputs: dict[str, np.ndarray],
    parameters: dict[str, Any] | None = None,
    outputs: list[tuple[str, bool]] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The binary tensor extension's body and headers, as tritonclient builds them."""
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": n,
                "shape": list(a.shape),
                "datatype": datatype(a),
                "parameters": {"binary_data_size": a.nbytes},
            }
            for n, a in inputs.items()
        ]
    }
    if parameters:
        header["parameters"] = parameters
    if outputs is not None:
        header["outputs"] = [{"name": n, "parameters": {"binary_data": b}} for n, b in outputs]
    raw = json.dumps(header).encode()
    body = raw + b"".join(a.tobytes() for a in inputs.values())
    headers = {"Inference-Header-Content-Length": str(len(raw)), "Content-Type": BINARY}
    return body, headers


def outputs_of(response: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The answer's JSON and its outputs as arrays, from JSON data or binary."""
    assert response.status_code == 200, response.text
    length = response.headers.get("inference-header-content-length")
    raw = response.content
    if length is None:
        assert response.headers["content-type"] == "application/json"
        head, rest = json.loads(raw), b""
    else:
        assert response.headers["content-type"] == BINARY
        head, rest = json.loads(raw[: int(length)]), raw[int(length) :]
    arrays, at = {}, 0
    for out in head["outputs"]:
        assert out["datatype"] == "FP32"
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            arrays[out["name"]] = np.array(out["data"], np.float32).reshape(out["shape"])
        else:
            data = np.frombuffer(rest[at : at + size], "<f4")
            arrays[out["name"]] = data.reshape(out["shape"])
            at += size
    assert at == len(rest)
    return head, arrays


def values_for(batch: int, steps: int, features: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (batch, steps, features)).astype(np.float32)


def v1_answer(
    client: TestClient, name: str, values: np.ndarray, horizon: int, state: list[Any] | None
) -> dict[str, Any]:
    series = []
    for b in range(values.shape[0]):
        rows = values[b, :, 0].tolist() if values.shape[2] == 1 else values[b].tolist()
        item: dict[str, Any] = {"values": rows, "horizon": horizon}
        if state is not None:
            item["state"] = state[b]
        series.append(item)
    response = client.post(
        f"/v1/models/{name}/predict", json={"series": series, "return_predictions": True}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_server_metadata_and_health(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "seqcast"
    assert {"binary_tensor_data", "sequence", "sequence(string_id)"} <= set(meta["extensions"])
    assert "model_repository" not in meta["extensions"]  # no admin keys here
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


@pytest.mark.parametrize(("name", "features", "targets", "lstm", "_"), MODELS)
def test_model_metadata_lists_every_tensor(
    client: TestClient, name: str, features: int, targets: int, lstm: bool, _: bool
) -> None:
    meta = client.get(f"/v2/models/{name}").json()
    info = client.get(f"/v1/models/{name}").json()["latest"]
    layers, hidden = info["num_layers"], info["hidden_size"]
    state = [-1, layers, hidden]
    assert meta["name"] == name
    assert meta["platform"] == "onnx_onnxv1"
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    outputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["outputs"]}
    want_in = {"values": ("FP32", [-1, -1, features]), "h": ("FP32", state)}
    want_out = {
        "forecast": ("FP32", [-1, -1, targets]),
        "predictions": ("FP32", [-1, -1, targets]),
        "h": ("FP32", state),
    }
    if lstm:
        want_in["c"] = want_out["c"] = ("FP32", state)
    assert (inputs, outputs) == (want_in, want_out)


def test_versions_and_readiness(client: TestClient) -> None:
    assert client.get("/v2/models/tiny-lstm").json()["versions"] == ["1", "2"]
    assert client.get("/v2/models/tiny-lstm/versions/1").json()["name"] == "tiny-lstm"
    assert client.get("/v2/models/tiny-lstm/ready").json() == {"name": "tiny-lstm", "ready": True}
    assert client.get("/v2/models/tiny-lstm/versions/2/ready").status_code == 200
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/tiny-lstm/versions/9"):
        response = client.get(path)
        assert response.status_code == 404
        assert set(response.json()) == {"error"}
    assert "nope" in client.get("/v2/models/nope").json()["error"]
    assert "version 9" in client.get("/v2/models/tiny-lstm/versions/9/ready").json()["error"]


@pytest.mark.parametrize(("name", "features", "targets", "lstm", "rolls"), MODELS)
@pytest.mark.parametrize("binary", [False, True])
def test_answers_equal_v1(
    client: TestClient,
    name: str,
    features: int,
    targets: int,
    lstm: bool,
    rolls: bool,
    binary: bool,
) -> None:
    """Two series with a state each, a horizon and predictions: /v2 answers what /v1 does."""
    horizon = 3 if rolls else 1
    first = v1_answer(client, name, values_for(2, 5, features, seed=1), 1, None)
    states = [s["state"] for s in first["series"]]
    values = values_for(2, 7, features, seed=2)
    expected = v1_answer(client, name, values, horizon, states)
    inputs = {"values": values, "h": np.array([s["h"] for s in states], np.float32)}
    if lstm:
        inputs["c"] = np.array([s["c"] for s in states], np.float32)
    names = ["forecast", "predictions", "h", *(["c"] if lstm else [])]
    url = f"/v2/models/{name}/infer"
    if binary:
        body, headers = binary_body(inputs, {"horizon": horizon}, [(n, True) for n in names])
        response = client.post(url, content=body, headers=headers)
    else:
        response = client.post(url, json=infer_json(inputs, {"horizon": horizon}, names))
    head, got = outputs_of(response)
    assert head["model_name"] == name
    assert head["model_version"] == str(expected["version"])
    assert [o["name"] for o in head["outputs"]] == names
    for b, series in enumerate(expected["series"]):
        forecast = np.array(series["forecast"], np.float32).reshape(horizon, targets)
        predictions = np.array(series["predictions"], np.float32).reshape(7, targets)
        np.testing.assert_allclose(got["forecast"][b], forecast, atol=1e-6)
        np.testing.assert_allclose(got["predictions"][b], predictions, atol=1e-6)
        np.testing.assert_allclose(got["h"][b], series["state"]["h"], atol=1e-6)
        if lstm:
            np.testing.assert_allclose(got["c"][b], series["state"]["c"], atol=1e-6)
    assert got["forecast"].shape == (2, horizon, targets)


@pytest.mark.parametrize(
    "shape", [[6], [1, 6], [1, 6, 1]], ids=["time", "batch-time", "batch-time-feature"]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_feature_models_take_every_values_shape(
    client: TestClient, shape: list[int], dtype: type
) -> None:
    values = np.linspace(-1, 1, 6).astype(dtype).reshape(shape)
    expected = v1_answer(client, "tiny-gru", values.reshape(1, 6, 1).astype(np.float32), 2, None)
    body, headers = binary_body({"values": values}, {"horizon": 2})
    _, got = outputs_of(client.post("/v2/models/tiny-gru/infer", content=body, headers=headers))
    np.testing.assert_allclose(got["forecast"][0, :, 0], expected["series"][0]["forecast"], 1e-6)


def test_outputs_by_default_and_binary_per_output(client: TestClient) -> None:
    values = values_for(1, 4, 1)
    head, got = outputs_of(
        client.post("/v2/models/tiny-lstm/infer", json=infer_json({"values": values}))
    )
    assert [o["name"] for o in head["outputs"]] == ["forecast", "h", "c"]  # no predictions
    assert "id" not in head
    assert "parameters" not in head
    # Binary for all but one, which asks for JSON.
    body, headers = binary_body(
        {"values": values}, {"binary_data_output": True}, [("forecast", False), ("h", True)]
    )
    response = client.post("/v2/models/tiny-lstm/infer", content=body, headers=headers)
    head2, got2 = outputs_of(response)
    assert "data" in head2["outputs"][0]
    assert "data" not in head2["outputs"][1]
    np.testing.assert_array_equal(got2["forecast"], got["forecast"])
    np.testing.assert_array_equal(got2["h"], got["h"])
    # The request id comes back; an untyped body (as tritonclient sends it) is taken.
    request = dict(infer_json({"values": values}), id="req-7")
    answer = client.post(
        "/v2/models/tiny-lstm/infer",
        content=json.dumps(request).encode(),
        headers={"content-type": ""},
    )
    assert answer.json()["id"] == "req-7"


def _bad_binary(header: dict[str, Any], payload: bytes, length: str | None = None) -> tuple:
    raw = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": length or str(len(raw)), "Content-Type": BINARY}
    return raw + payload, headers


def _values(data: Any = (0.1, 0.2), shape: Any = (1, 2), dtype: str = "FP32") -> dict:
    return {"name": "values", "shape": list(shape), "datatype": dtype, "data": list(data)}


def _binary_values(size: int, shape: Any = (1, 2), dtype: str = "FP32") -> dict:
    return {
        "name": "values",
        "shape": list(shape),
        "datatype": dtype,
        "parameters": {"binary_data_size": size},
    }


F32 = np.array([0.5, 0.25], np.float32).tobytes()
H_GRU = {"name": "h", "shape": [1, 2, 5], "datatype": "FP32", "data": [0.0] * 10}

# (request body as JSON or (body, headers), model, words the message must hold)
BAD: list[tuple[str, Any, str, list[str]]] = [
    ("empty body", b"", "tiny-gru", ["empty"]),
    ("not JSON", b"{", "tiny-gru", ["JSON"]),
    ("no inputs", {"inputs": []}, "tiny-gru", ["inputs"]),
    (
        "unknown input",
        {"inputs": [_values(), {**_values(), "name": "x"}]},
        "tiny-gru",
        ["'x'", "values, h"],
    ),
    ("no values", {"inputs": [H_GRU]}, "tiny-gru", ["values", "required"]),
    ("twice", {"inputs": [_values(), _values()]}, "tiny-gru", ["'values'", "twice"]),
    ("datatype", {"inputs": [_values(dtype="INT64")]}, "tiny-gru", ["INT64", "FP32 or FP64"]),
    ("count", {"inputs": [_values(shape=(1, 3))]}, "tiny-gru", ["'values'", "2 numbers", "[1, 3]"]),
    ("ragged", {"inputs": [_values(data=([1.0], [2.0, 3.0]))]}, "tiny-gru", ["ragged"]),
    ("string", {"inputs": [_values(data=("1", 2.0))]}, "tiny-gru", ["'values'", "number"]),
    ("boolean", {"inputs": [_values(data=(True, 2.0))]}, "tiny-gru", ["'values'", "number"]),
    (
        "no data",
        {"inputs": [{k: v for k, v in _values().items() if k != "data"}]},
        "tiny-gru",
        ["no data"],
    ),
    (
        "4 dims",
        {"inputs": [_values(data=[0.1] * 2, shape=(1, 1, 2, 1))]},
        "tiny-gru",
        ["values", "[batch, time, 1]"],
    ),
    (
        "features",
        {"inputs": [_values(shape=(1, 2))]},
        "two-in-two-out",
        ["[batch, time, 2]", "a, b"],
    ),
    (
        "row width",
        {"inputs": [_values(data=[0.1] * 3, shape=(1, 1, 3))]},
        "two-in-two-out",
        ["[time, 2]"],
    ),
    ("no time", {"inputs": [_values(data=(), shape=(1, 0))]}, "tiny-gru", ["values", "no values"]),
    ("no batch", {"inputs": [_values(data=(), shape=(0, 2))]}, "tiny-gru", ["batch 0"]),
    (
        "too long",
        {"inputs": [_values(data=[0.1] * 51, shape=(1, 51))]},
        "tiny-gru",
        ["max_values_per_series=50"],
    ),
    (
        "too many",
        {"inputs": [_values(data=[0.1] * 5, shape=(5, 1))]},
        "tiny-gru",
        ["max_series_per_request=4"],
    ),
    (
        "horizon",
        {"inputs": [_values()], "parameters": {"horizon": 9}},
        "tiny-gru",
        ["horizon", "max_horizon=8"],
    ),
    (
        "horizon 0",
        {"inputs": [_values()], "parameters": {"horizon": 0}},
        "tiny-gru",
        ["horizon", ">= 1"],
    ),
    (
        "horizon text",
        {"inputs": [_values()], "parameters": {"horizon": "3"}},
        "tiny-gru",
        ["horizon"],
    ),
    (
        "no rollout",
        {"inputs": [_values(data=[0.1] * 2, shape=(1, 1, 2))], "parameters": {"horizon": 2}},
        "two-in-one-out",
        ["horizon must be 1"],
    ),
    (
        "parameter",
        {"inputs": [_values()], "parameters": {"horizen": 2}},
        "tiny-gru",
        ["'horizen'", "horizon"],
    ),
    (
        "input parameter",
        {"inputs": [{**_values(), "parameters": {"x": 1}}]},
        "tiny-gru",
        ["'x'", "binary_data_size"],
    ),
    (
        "shared memory",
        {"inputs": [{**_values(), "parameters": {"shared_memory_region": "r"}}]},
        "tiny-gru",
        ["shared memory"],
    ),
    (
        "output",
        {"inputs": [_values()], "outputs": [{"name": "y"}]},
        "tiny-gru",
        ["'y'", "forecast, predictions, h"],
    ),
    ("output c", {"inputs": [_values()], "outputs": [{"name": "c"}]}, "tiny-gru", ["'c'"]),
    (
        "output twice",
        {"inputs": [_values()], "outputs": [{"name": "h"}, {"name": "h"}]},
        "tiny-gru",
        ["twice"],
    ),
    (
        "classification",
        {
            "inputs": [_values()],
            "outputs": [{"name": "forecast", "parameters": {"classification": 2}}],
        },
        "tiny-gru",
        ["classification"],
    ),
    ("unknown key", {"inputs": [_values()], "extra": 1}, "tiny-gru", ["extra"]),
    (
        "h shape",
        {"inputs": [_values(), {**H_GRU, "shape": [1, 5, 2]}]},
        "tiny-gru",
        ["h", "[1, 2, 5]", "[1, 5, 2]"],
    ),
    (
        "h range",
        {"inputs": [_values(), {**H_GRU, "data": [2.0] * 10}]},
        "tiny-gru",
        ["h[0][0][0]", "1.001"],
    ),
    (
        "c for GRU",
        {"inputs": [_values(), H_GRU, {**H_GRU, "name": "c"}]},
        "tiny-gru",
        ["'c'", "values, h"],
    ),
    (
        "c missing",
        {"inputs": [_values(), {**H_GRU, "shape": [1, 2, 8], "data": [0.0] * 16}]},
        "tiny-lstm",
        ["c is required", "LSTM"],
    ),
    (
        "c alone",
        {"inputs": [_values(), {**H_GRU, "name": "c", "shape": [1, 2, 8], "data": [0.0] * 16}]},
        "tiny-lstm",
        ["h is required"],
    ),
    (
        "h batch",
        {"inputs": [_values(), {**H_GRU, "shape": [2, 2, 5], "data": [0.0] * 20}]},
        "tiny-gru",
        ["[1, 2, 5]"],
    ),
    (
        "sequence id",
        {"inputs": [_values()], "parameters": {"sequence_id": -1}},
        "tiny-gru",
        ["sequence_id", "uint64"],
    ),
    (
        "sequence id big",
        {"inputs": [_values()], "parameters": {"sequence_id": 2**64}},
        "tiny-gru",
        ["sequence_id"],
    ),
    (
        "start alone",
        {"inputs": [_values()], "parameters": {"sequence_start": True}},
        "tiny-gru",
        ["sequence_start", "sequence_id"],
    ),
    (
        "offset alone",
        {"inputs": [_values()], "parameters": {"sequence_offset": 0}},
        "tiny-gru",
        ["sequence_offset", "sequence_id"],
    ),
    (
        "start offset",
        {
            "inputs": [_values()],
            "parameters": {"sequence_id": 5, "sequence_start": True, "sequence_offset": 3},
        },
        "tiny-gru",
        ["sequence_offset is 3", "starts at 0"],
    ),
    (
        "start flag",
        {"inputs": [_values()], "parameters": {"sequence_id": 5, "sequence_start": 1}},
        "tiny-gru",
        ["sequence_start", "true or false"],
    ),
    (
        "not started",
        {"inputs": [_values()], "parameters": {"sequence_id": "never"}},
        "tiny-gru",
        ["'never'", "not active", "sequence_start"],
    ),
    (
        "sequence batch",
        {
            "inputs": [_values(data=[0.1] * 2, shape=(2, 1))],
            "parameters": {"sequence_id": 9, "sequence_start": True},
        },
        "tiny-gru",
        ["batch 2"],
    ),
    (
        "NaN",
        _bad_binary({"inputs": [_binary_values(8)]}, np.array([0.5, np.nan], np.float32).tobytes()),
        "tiny-gru",
        ["values[0][1][0]", "nan", "finite"],
    ),
    (
        "beyond float32",
        _bad_binary(
            {"inputs": [_binary_values(16, dtype="FP64")]}, np.array([0.5, 1e39]).tobytes()
        ),
        "tiny-gru",
        ["1e+39", "float32"],
    ),
    (
        "binary size",
        _bad_binary({"inputs": [_binary_values(4)]}, F32),
        "tiny-gru",
        ["binary_data_size is 4", "takes 8"],
    ),
    (
        "short body",
        _bad_binary({"inputs": [_binary_values(8)]}, F32[:4]),
        "tiny-gru",
        ["only 4 bytes"],
    ),
    (
        "extra bytes",
        _bad_binary({"inputs": [_binary_values(8)]}, F32 + b"xx"),
        "tiny-gru",
        ["2 bytes after"],
    ),
    (
        "both",
        _bad_binary({"inputs": [{**_binary_values(8), "data": [0.1, 0.2]}]}, F32),
        "tiny-gru",
        ["both data and binary_data_size"],
    ),
    (
        "header length",
        _bad_binary({"inputs": [_binary_values(8)]}, F32, "12x"),
        "tiny-gru",
        ["Inference-Header-Content-Length"],
    ),
    (
        "header too long",
        _bad_binary({"inputs": [_binary_values(8)]}, F32, "9999"),
        "tiny-gru",
        ["9999", "more than the body"],
    ),
    (
        "raw binary",
        _bad_binary({"inputs": [_binary_values(8)]}, F32, "0"),
        "tiny-gru",
        ["Inference-Header-Content-Length: 0", "not supported"],
    ),
    (
        "no header length",
        (json.dumps({"inputs": [_binary_values(8)]}).encode(), {"content-type": BINARY}),
        "tiny-gru",
        ["Inference-Header-Content-Length"],
    ),
]


@pytest.mark.parametrize(("case", "request_", "name", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_400_naming_what_is_wrong(
    client: TestClient, case: str, request_: Any, name: str, words: list[str]
) -> None:
    if isinstance(request_, tuple):
        body, headers = request_
        response = client.post(f"/v2/models/{name}/infer", content=body, headers=headers)
    elif isinstance(request_, bytes):
        response = client.post(f"/v2/models/{name}/infer", content=request_)
    else:
        response = client.post(f"/v2/models/{name}/infer", json=request_)
    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == {"error"}
    for word in words:
        assert word in error["error"], (case, error)


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v2/models/nope/infer", 404, ["'nope'"]),
        ("/v2/models/tiny-gru/versions/7/infer", 404, ["no version 7"]),
        ("/v2/models/tiny-gru/versions/x/infer", 400, ["version", "positive integer"]),
        ("/v2/models/tiny-gru/predict", 404, ["Not Found"]),
    ],
)
def test_paths_that_name_nothing(
    client: TestClient, path: str, status: int, words: list[str]
) -> None:
    response = client.post(path, json={"inputs": [_values()]})
    assert response.status_code == status
    for word in words:
        assert word in response.json()["error"]


def test_front_door_answers_in_the_protocols_form(make_client: MakeClient) -> None:
    key = "oip-secret-0123456789abcdef"
    with make_client(api_keys=f"user:{key}", max_body_bytes=4096) as c:
        # Health needs no key (SEQCAST_AUTH_EXEMPT=health), the rest does.
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/health/ready").status_code == 200
        refused = [
            ("GET", "/v2"),
            ("GET", "/v2/models/tiny-gru"),
            ("POST", "/v2/models/tiny-gru/infer"),
        ]
        for method, path in refused:
            response = c.request(method, path, json={"inputs": [_values()]})
            assert response.status_code == 401
            assert response.json() == {"error": response.json()["error"]}
            assert "API key" in response.json()["error"]
            assert response.headers["x-request-id"]
        auth = {"Authorization": f"Bearer {key}"}
        ok = c.post("/v2/models/tiny-gru/infer", json={"inputs": [_values()]}, headers=auth)
        assert ok.status_code == 200
        wrong = c.post(
            "/v2/models/tiny-gru/infer",
            content=b"x",
            headers={**auth, "content-type": "text/plain"},
        )
        assert wrong.status_code == 415
        assert "application/octet-stream" in wrong.json()["error"]
        big = c.post("/v2/models/tiny-gru/infer", content=b"{" * 5000, headers=auth)
        assert big.status_code == 413
        assert big.json() == {"error": "request body is larger than the limit max_body_bytes=4096"}
        gzip = c.post(
            "/v2/models/tiny-gru/infer",
            json={"inputs": [_values()]},
            headers={**auth, "Content-Encoding": "gzip"},
        )
        assert gzip.status_code == 415
        assert "Content-Encoding 'gzip'" in gzip.json()["error"]
        # /v1 keeps its own shape.
        assert (
            c.post("/v1/models/tiny-gru/predict", json={}).json()["error"]["code"] == "unauthorized"
        )


def test_v2_is_not_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths
    assert not [p for p in paths if p.startswith("/v2")]


def test_a_repeated_binary_header_is_parsed_once_and_its_data_read_each_time(
    client: TestClient,
) -> None:
    """Two requests whose headers are the same bytes (the cache's key) but whose binary
    tensors differ get the answers of their own values."""
    answers = []
    for seed in (1, 2):
        values = values_for(1, 6, 1, seed=seed)
        body, headers = binary_body({"values": values}, {"horizon": 2})
        _, got = outputs_of(client.post("/v2/models/tiny-rnn/infer", content=body, headers=headers))
        expected = v1_answer(client, "tiny-rnn", values, 2, None)
        np.testing.assert_allclose(
            got["forecast"][0, :, 0], expected["series"][0]["forecast"], 1e-6
        )
        answers.append(got["forecast"])
    assert not np.array_equal(answers[0], answers[1])


def test_the_header_cache_is_bounded_and_keeps_no_json_data() -> None:
    from service.oip import header, tensors

    values = np.ones((1, 3), np.float32)
    for n in range(header._HEADERS_MAX + 20):
        body, headers = binary_body({"values": values}, {"horizon": n + 1})
        length = headers["Inference-Header-Content-Length"].encode()
        tensors.decode(body, length)
        assert len(header._HEADERS) <= header._HEADERS_MAX
    mixed = {
        "inputs": [
            {
                "name": "values",
                "shape": [1, 3],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 12},
            },
            {"name": "h", "shape": [1, 1, 2], "datatype": "FP32", "data": [0.5, 0.5]},
        ]
    }
    raw = json.dumps(mixed).encode()
    tensors.decode(raw + values.tobytes(), str(len(raw)).encode())
    assert raw not in header._HEADERS


def test_a_listed_browser_origin_may_send_and_read_binary_tensors(make_client: MakeClient) -> None:
    origin = "https://app.example"
    with make_client(allowed_origins=origin) as c:
        preflight = c.options(
            "/v2/models/tiny-gru/infer",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "inference-header-content-length",
            },
        )
        assert preflight.status_code == 204
        allowed = preflight.headers["access-control-allow-headers"]
        assert "inference-header-content-length" in allowed
        body, headers = binary_body(
            {"values": np.ones((1, 3), np.float32)}, {"binary_data_output": True}
        )
        answer = c.post(
            "/v2/models/tiny-gru/infer", content=body, headers={**headers, "Origin": origin}
        )
        assert answer.status_code == 200
        exposed = answer.headers["access-control-expose-headers"]
        assert "inference-header-content-length" in exposed
        other = c.post(
            "/v2/models/tiny-gru/infer",
            content=body,
            headers={**headers, "Origin": "https://elsewhere.example"},
        )
        assert other.status_code == 403
        assert "SEQCAST_ALLOWED_ORIGINS" in other.json()["error"]
