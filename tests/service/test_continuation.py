"""The state contract: any chunking of a series through the HTTP API equals one call."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

finite = st.floats(min_value=-50.0, max_value=50.0, allow_nan=False, width=32)


@st.composite
def chunked_series(draw: st.DrawFn) -> tuple[list[float], list[int]]:
    """A series of 1..40 values and cut points that split it into 1..8 non-empty chunks."""
    values = draw(st.lists(finite, min_size=1, max_size=40))
    cuts = (
        draw(st.lists(st.integers(1, len(values)), max_size=7, unique=True))
        if len(values) > 1
        else []
    )
    return values, sorted(c for c in cuts if c < len(values))


def call(client: TestClient, name: str, values: list[float], state: dict | None) -> dict:
    series: dict = {"values": values}
    if state is not None:
        series["state"] = state
    response = client.post(
        f"/v1/models/{name}/predict", json={"series": [series], "return_predictions": True}
    )
    assert response.status_code == 200, response.text
    answer: dict = response.json()["series"][0]
    return answer


@pytest.mark.parametrize("name", ["tiny-rnn", "tiny-lstm", "tiny-gru"])
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=chunked_series())
def test_any_chunking_equals_one_call(
    client: TestClient, name: str, case: tuple[list[float], list[int]]
) -> None:
    values, cuts = case
    whole = call(client, name, values, None)
    predictions: list[float] = []
    state = None
    for chunk in np.split(np.array(values, dtype=np.float64), cuts):
        answer = call(client, name, chunk.tolist(), state)
        predictions.extend(answer["predictions"])
        state = answer["state"]
    assert state is not None
    np.testing.assert_allclose(predictions, whole["predictions"], atol=1e-5)
    np.testing.assert_allclose(answer["forecast"], whole["forecast"], atol=1e-5)
    np.testing.assert_allclose(state["h"], whole["state"]["h"], atol=1e-5)
    if "c" in whole["state"]:
        np.testing.assert_allclose(state["c"], whole["state"]["c"], atol=1e-5)
