"""Whatever a client sends, the answer is never a 500 (hypothesis-generated bodies)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
anything = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
numbers = st.floats(allow_nan=False, allow_infinity=False, width=64)
state = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["tiny-lstm", "tiny-gru", "x"]),
        "version": st.integers(-1, 3),
        "h": st.lists(st.lists(numbers, max_size=9), max_size=3),
    },
    optional={"c": st.lists(st.lists(numbers, max_size=9), max_size=3)},
)
series = st.fixed_dictionaries(
    {"values": st.lists(numbers, max_size=5) | st.lists(st.lists(numbers, max_size=3), max_size=3)},
    optional={"state": state | anything, "horizon": st.integers(-2, 600) | anything},
)
bodies = st.fixed_dictionaries(
    {"series": st.lists(series, max_size=3) | anything},
    optional={"return_state": anything, "return_predictions": st.booleans()},
)
CHECK = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_not_500(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()["error"]) >= {"status", "code", "message", "field"}


@pytest.mark.parametrize("name", ["tiny-lstm", "tiny-gru", "two-in-one-out"])
@CHECK
@given(body=bodies)
def test_shaped_bodies(api: TestClient, name: str, body: dict[str, Any]) -> None:
    assert_not_500(api.post(f"/v1/models/{name}/predict", content=json.dumps(body)))


@CHECK
@given(body=anything)
def test_any_json(api: TestClient, body: Any) -> None:
    assert_not_500(api.post("/v1/models/tiny-rnn/predict", content=json.dumps(body)))


@CHECK
@given(raw=st.binary(max_size=64))
def test_any_bytes(api: TestClient, raw: bytes) -> None:
    assert_not_500(api.post("/v1/models/tiny-rnn/predict", content=raw))
