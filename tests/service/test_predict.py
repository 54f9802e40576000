"""POST /v1/models/{name}/predict: values, state, horizon and multi-series answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.oracle import Oracle

SINGLE = ["tiny-rnn", "tiny-lstm", "tiny-gru"]


def _post(client: TestClient, name: str, body: object, version: int | None = None) -> dict:
    url = f"/v1/models/{name}" + (f"/versions/{version}" if version else "") + "/predict"
    response = client.post(url, json=body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("name", SINGLE)
def test_predictions_and_state_match_onnxruntime(
    client: TestClient, model_dir: Path, name: str
) -> None:
    values = np.sin(np.arange(12) * 0.4) * 3.0
    body = _post(
        client, name, {"series": [{"values": values.tolist()}], "return_predictions": True}
    )
    preds, h, c = Oracle(model_dir / name / ("2" if name == "tiny-lstm" else "1")).run(
        values[:, None]
    )
    (series,) = body["series"]
    assert body["model"] == name
    np.testing.assert_allclose(series["predictions"], preds[:, 0], atol=1e-5)
    np.testing.assert_allclose(series["forecast"], preds[-1:, 0], atol=1e-5)
    np.testing.assert_allclose(series["state"]["h"], h, atol=1e-5)
    if c is None:
        assert "c" not in series["state"]
    else:
        np.testing.assert_allclose(series["state"]["c"], c, atol=1e-5)
