"""Every bad input answers 4xx in the one error shape, naming the field; never a 500."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from fastapi.testclient import TestClient

LSTM_STATE = {"model": "tiny-lstm", "version": 2, "h": [[0.0] * 8] * 2, "c": [[0.0] * 8] * 2}
GRU_STATE = {"model": "tiny-gru", "version": 1, "h": [[0.0] * 5] * 2}


def series(**fields: Any) -> bytes:
    return json.dumps({"series": [{"values": [0.1, 0.2], **fields}]}).encode()


def with_state(**changes: Any) -> bytes:
    return series(state={**LSTM_STATE, **changes})


# (id, model, raw body, status, code, field)
CASES: list[tuple[str, str, bytes, int, str, str | None]] = [
    ("empty body", "tiny-lstm", b"", 422, "invalid_json", None),
    ("not json", "tiny-lstm", b"values=1,2", 422, "invalid_json", None),
    ("truncated json", "tiny-lstm", b'{"series": [{"values": [1, 2]', 422, "invalid_json", None),
    ("body is a list", "tiny-lstm", b"[1, 2]", 422, "invalid_value", None),
    ("NaN literal", "tiny-lstm", b'{"series": [{"values": [1, NaN]}]}', 422, "invalid_value",
     "series[0].values[1]"),
    ("Infinity literal", "tiny-lstm", b'{"series": [{"values": [Infinity]}]}', 422,
     "invalid_value", "series[0].values[0]"),
    ("-Infinity literal", "tiny-lstm", b'{"series": [{"values": [1, 2, -Infinity]}]}', 422,
     "invalid_value", "series[0].values[2]"),
    ("overflows float64", "tiny-lstm", b'{"series": [{"values": [1e400]}]}', 422,
     "invalid_value", "series[0].values[0]"),
    ("overflows float32", "tiny-lstm", b'{"series": [{"values": [1, 1e308]}]}', 422,
     "invalid_value", "series[0].values[1]"),
    ("negative overflow", "tiny-lstm", b'{"series": [{"values": [-3.5e38]}]}', 422,
     "invalid_value", "series[0].values[0]"),
    ("string number", "tiny-lstm", b'{"series": [{"values": ["1.5"]}]}', 422, "invalid_value",
     "series[0].values[0]"),
    ("boolean", "tiny-lstm", b'{"series": [{"values": [1, true]}]}', 422, "invalid_value",
     "series[0].values[1]"),
    ("null value", "tiny-lstm", b'{"series": [{"values": [null]}]}', 422, "invalid_value",
     "series[0].values[0]"),
    ("object value", "tiny-lstm", b'{"series": [{"values": [{"v": 1}]}]}', 422,
     "invalid_value", "series[0].values[0]"),
    ("values not a list", "tiny-lstm", b'{"series": [{"values": 3}]}', 422, "invalid_value",
     "series[0].values"),
    ("empty series", "tiny-lstm", b'{"series": [{"values": []}]}', 422, "invalid_value",
     "series[0].values"),
    ("values missing", "tiny-lstm", b'{"series": [{"horizon": 2}]}', 422, "missing_field",
     "series[0].values"),
    ("no series", "tiny-lstm", b'{"series": []}', 422, "invalid_value", "series"),
    ("series missing", "tiny-lstm", b"{}", 422, "missing_field", "series"),
    ("series not a list", "tiny-lstm", b'{"series": {"values": [1]}}', 422, "invalid_value",
     "series"),
    ("unknown top-level key", "tiny-lstm", b'{"series": [{"values": [1]}], "retrun_state": true}',
     422, "unknown_field", "retrun_state"),
    ("unknown series key", "tiny-lstm", series(horizen=2), 422, "unknown_field",
     "series[0].horizen"),
    ("horizon zero", "tiny-lstm", series(horizon=0), 422, "invalid_value", "series[0].horizon"),
    ("horizon fraction", "tiny-lstm", series(horizon=1.5), 422, "invalid_value",
     "series[0].horizon"),
    ("horizon string", "tiny-lstm", series(horizon="2"), 422, "invalid_value",
     "series[0].horizon"),
    ("horizon over limit", "tiny-lstm", series(horizon=513), 422, "limit_exceeded",
     "series[0].horizon"),
    ("flag not boolean", "tiny-lstm", b'{"series": [{"values": [1]}], "return_state": "yes"}',
     422, "invalid_value", "return_state"),
    ("rows for one feature", "tiny-lstm", b'{"series": [{"values": [[1, 2], [3, 4]]}]}', 422,
     "invalid_value", "series[0].values[0]"),
    ("numbers for two features", "two-in-one-out", b'{"series": [{"values": [1, 2]}]}', 422,
     "invalid_value", "series[0].values"),
    ("short row", "two-in-one-out", b'{"series": [{"values": [[1, 2], [3]]}]}', 422,
     "invalid_value", "series[0].values[1]"),
    ("long row", "two-in-one-out", b'{"series": [{"values": [[1, 2], [3, 4, 5]]}]}', 422,
     "invalid_value", "series[0].values[1]"),
    ("row then number", "two-in-one-out", b'{"series": [{"values": [[1, 2], 3]}]}', 422,
     "invalid_value", "series[0].values[1]"),
    ("NaN in a row", "two-in-one-out", b'{"series": [{"values": [[1, 2], [NaN, 4]]}]}', 422,
     "invalid_value", "series[0].values[1][0]"),
    ("horizon without rollout", "two-in-one-out",
     b'{"series": [{"values": [[1, 2]], "horizon": 2}]}', 422, "invalid_value",
     "series[0].horizon"),
    ("state of another model", "tiny-lstm", with_state(model="tiny-gru"), 422, "state_mismatch",
     "series[0].state.model"),
    ("state of another version", "tiny-lstm", with_state(version=1), 422, "state_mismatch",
     "series[0].state.version"),
    ("state version as string", "tiny-lstm", with_state(version="2"), 422, "invalid_value",
     "series[0].state.version"),
    ("state h too few layers", "tiny-lstm", with_state(h=[[0.0] * 8]), 422, "invalid_shape",
     "series[0].state.h"),
    ("state h too wide", "tiny-lstm", with_state(h=[[0.0] * 9] * 2), 422, "invalid_shape",
     "series[0].state.h"),
    ("state h ragged", "tiny-lstm", with_state(h=[[0.0] * 8, [0.0] * 7]), 422, "invalid_shape",
     "series[0].state.h"),
    ("state h flat", "tiny-lstm", with_state(h=[0.0] * 16), 422, "invalid_value",
     "series[0].state.h[0]"),
    ("state h empty", "tiny-lstm", with_state(h=[]), 422, "invalid_value", "series[0].state.h"),
    ("state h NaN", "tiny-lstm", with_state(h=[[0.0] * 8, [0.0, "NaN"] + [0.0] * 6]), 422,
     "invalid_value", "series[0].state.h[1][1]"),
    ("state h overflows", "tiny-lstm", with_state(h=[[1e39] + [0.0] * 7, [0.0] * 8]), 422,
     "invalid_value", "series[0].state.h[0][0]"),
    ("state c missing for LSTM", "tiny-lstm", with_state(c=None), 422, "missing_field",
     "series[0].state.c"),
    ("state c wrong shape", "tiny-lstm", with_state(c=[[0.0] * 8]), 422, "invalid_shape",
     "series[0].state.c"),
    ("state c for GRU", "tiny-gru", series(state={**GRU_STATE, "c": [[0.0] * 5] * 2}), 422,
     "unknown_field", "series[0].state.c"),
    ("state h missing", "tiny-gru", series(state={"model": "tiny-gru", "version": 1}), 422,
     "missing_field", "series[0].state.h"),
    ("state unknown key", "tiny-gru", series(state={**GRU_STATE, "x": 1}), 422, "unknown_field",
     "series[0].state.x"),
    ("state time for an untimed model", "tiny-gru", series(state={**GRU_STATE, "time": "2024"}),
     422, "unknown_field", "series[0].state.time"),
    ("state levels for a model in levels", "tiny-gru",
     series(state={**GRU_STATE, "levels": [1.0]}), 422, "unknown_field", "series[0].state.levels"),
    ("second series at fault", "tiny-gru",
     b'{"series": [{"values": [1]}, {"values": [1, "x"]}]}', 422, "invalid_value",
     "series[1].values[1]"),
]  # fmt: skip


def assert_error(
    response: Any, status: int, code: str, field: str | None, *, named: bool = True
) -> dict[str, Any]:
    """The one error shape; `named`: the message names the field too (body fields do)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"status", "code", "message", "field"}
    assert error["status"] == status
    assert error["code"] == code
    assert error["field"] == field
    assert error["message"]
    if field is not None and named:
        assert field in error["message"] or field.split(".")[-1] in error["message"]
    return error


@pytest.mark.parametrize(
    ("model", "content", "status", "code", "field"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input(
    api: TestClient, model: str, content: bytes, status: int, code: str, field: str | None
) -> None:
    response = api.post(
        f"/v1/models/{model}/predict",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert_error(response, status, code, field)


def test_nan_and_infinity_say_why(api: TestClient) -> None:
    response = api.post("/v1/models/tiny-rnn/predict", content=b'{"series": [{"values": [NaN]}]}')
    error = assert_error(response, 422, "invalid_value", "series[0].values[0]")
    assert "finite" in error["message"]


def test_invalid_json_says_nan_is_not_json(api: TestClient) -> None:
    response = api.post("/v1/models/tiny-rnn/predict", content=b'{"series": [{"values": [nan]}]}')
    error = assert_error(response, 422, "invalid_json", None)
    assert "NaN and Infinity are not JSON numbers" in error["message"]


@pytest.mark.parametrize(
    ("url", "status", "code", "field"),
    [
        ("/v1/models/nope/predict", 404, "model_not_found", "name"),
        ("/v1/models/tiny-lstm/versions/7/predict", 404, "version_not_found", "version"),
        ("/v1/models/tiny-lstm/versions/0/predict", 404, "version_not_found", "version"),
        ("/v1/models/tiny-lstm/versions/one/predict", 422, "invalid_value", "version"),
        ("/v1/nothing", 404, "not_found", None),
    ],
)
def test_unknown_model_version_or_path(
    api: TestClient, url: str, status: int, code: str, field: str | None
) -> None:
    response = api.post(url, json={"series": [{"values": [1.0]}]})
    assert_error(response, status, code, field, named=False)


@pytest.mark.parametrize(
    ("method", "url", "allow"),
    [
        ("GET", "/v1/models/tiny-lstm/predict", "POST"),
        ("PUT", "/v1/models/tiny-lstm/versions/2/predict", "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_wrong_method(api: TestClient, method: str, url: str, allow: str) -> None:
    response = api.request(method, url)
    assert_error(response, 405, "method_not_allowed", None)
    assert response.headers["allow"] == allow


@pytest.fixture(scope="module")
def limited(
    make_client: Callable[..., AbstractContextManager[TestClient]],
) -> Iterator[TestClient]:
    with make_client(
        max_series_per_request=2, max_values_per_series=3, max_horizon=4, max_body_bytes=2048
    ) as c:
        yield c


@pytest.mark.parametrize(
    ("body", "field", "limit"),
    [
        ({"series": [{"values": [1]}] * 3}, "series", "max_series_per_request=2"),
        ({"series": [{"values": [1, 2, 3, 4]}]}, "series[0].values", "max_values_per_series=3"),
        ({"series": [{"values": [1]}, {"values": [1], "horizon": 5}]}, "series[1].horizon",
         "max_horizon=4"),
    ],
)  # fmt: skip
def test_limits_name_themselves(
    limited: TestClient, body: dict[str, Any], field: str, limit: str
) -> None:
    error = assert_error(
        limited.post("/v1/models/tiny-rnn/predict", json=body), 422, "limit_exceeded", field
    )
    assert limit in error["message"]


@pytest.mark.parametrize("url", ["/v1/models/tiny-rnn/predict", "/v1/sessions"])
def test_body_over_the_limit_by_content_length(limited: TestClient, url: str) -> None:
    big = json.dumps({"series": [{"values": [0.5] * 1000}]}).encode()
    error = assert_error(limited.post(url, content=big), 413, "body_too_large", None)
    assert "max_body_bytes=2048" in error["message"]


def test_body_over_the_limit_while_streaming(limited: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"series": [{"values": ['
        for _ in range(300):
            yield b"0.5, 0.5, 0.5, "
        yield b"0.5]}]}"

    response = limited.post("/v1/models/tiny-rnn/predict", content=chunks())
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "body_too_large", None)


def test_limits_are_per_app(api: TestClient) -> None:
    body = {"series": [{"values": [0.5] * 100}] * 3}
    assert api.post("/v1/models/tiny-rnn/predict", json=body).status_code == 200
