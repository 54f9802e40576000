"""Whatever a client sends to /v2 infer, JSON or binary, the answer is never a 500 and
every refusal has the protocol's error form (hypothesis-generated requests)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service.test_fuzz import anything

dims = st.lists(st.integers(-1, 4) | anything, max_size=4)
numbers = st.floats(allow_nan=True, allow_infinity=True, width=64)
parameters = st.dictionaries(
    st.sampled_from(
        [
            *("horizon", "binary_data_output", "sequence_id", "sequence_start"),
            *("sequence_end", "sequence_offset", "priority", "binary_data_size"),
            *("binary_data", "x"),
        ]
    ),
    st.integers(-3, 2**65) | st.booleans() | st.text(max_size=3) | anything,
    max_size=4,
)
tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["values", "h", "c", "x"]) | anything,
        "shape": dims,
        "datatype": st.sampled_from(["FP32", "FP64", "INT8", "BYTES"]) | anything,
    },
    optional={
        "data": st.lists(numbers, max_size=6) | anything,
        "parameters": parameters | anything,
    },
)
requests = st.fixed_dictionaries(
    {"inputs": st.lists(tensor, max_size=3) | anything},
    optional={
        "parameters": parameters | anything,
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["forecast", "h", "c", "y"]) | anything},
                optional={"parameters": parameters},
            ),
            max_size=3,
        )
        | anything,
        "id": st.text(max_size=3) | anything,
    },
)
CHECK = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_refused_in_form(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()
        assert set(error) == {"error"}
        assert isinstance(error["error"], str)


@pytest.mark.parametrize("name", ["tiny-lstm", "two-in-one-out"])
@CHECK
@given(body=requests)
def test_json_requests(api: TestClient, name: str, body: dict[str, Any]) -> None:
    raw = json.dumps(body, allow_nan=True).encode()  # NaN too: not JSON, often sent
    assert_refused_in_form(api.post(f"/v2/models/{name}/infer", content=raw))


@CHECK
@given(body=requests, payload=st.binary(max_size=80), cut=st.integers(-2, 400))
def test_binary_requests(api: TestClient, body: dict[str, Any], payload: bytes, cut: int) -> None:
    raw = json.dumps(body, allow_nan=True).encode()
    length = str(len(raw) if cut < 0 else cut)
    headers = {
        "Inference-Header-Content-Length": length,
        "Content-Type": "application/octet-stream",
    }
    response = api.post("/v2/models/tiny-gru/infer", content=raw + payload, headers=headers)
    assert_refused_in_form(response)


@CHECK
@given(values=st.lists(numbers, min_size=1, max_size=8), wide=st.booleans())
def test_any_binary_numbers(api: TestClient, values: list[float], wide: bool) -> None:
    """NaN, infinities and numbers beyond float32 in binary tensors: refused, not run."""
    with np.errstate(over="ignore"):  # beyond float32: inf, as a client's cast makes it
        array = np.array([values], np.float64 if wide else np.float32)
    header = {
        "inputs": [
            {
                "name": "values",
                "shape": list(array.shape),
                "datatype": "FP64" if wide else "FP32",
                "parameters": {"binary_data_size": array.nbytes},
            }
        ]
    }
    raw = json.dumps(header).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(raw)),
        "Content-Type": "application/octet-stream",
    }
    response = api.post("/v2/models/tiny-rnn/infer", content=raw + array.tobytes(), headers=headers)
    assert_refused_in_form(response)
    if not wide and np.isfinite(array).all():
        assert response.status_code == 200, response.text
