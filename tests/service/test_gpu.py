"""CUDA and CPU agree: the same answers to 1e-5 (runs only where onnxruntime offers CUDA)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import onnxruntime
import pytest
from fastapi.testclient import TestClient

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in onnxruntime.get_available_providers(),
        reason="onnxruntime offers no CUDAExecutionProvider here",
    ),
]


@pytest.mark.parametrize("name", ["tiny-rnn", "tiny-lstm", "tiny-gru"])
def test_cuda_matches_cpu(
    make_client: Callable[..., AbstractContextManager[TestClient]], name: str
) -> None:
    rng = np.random.default_rng(0)
    body = {
        "series": [
            {"values": rng.normal(size=n).tolist(), "horizon": 3} for n in (1, 7, 7, 50, 200)
        ],
        "return_predictions": True,
    }
    answers = {}
    for providers in ("CUDAExecutionProvider,CPUExecutionProvider", "CPUExecutionProvider"):
        with make_client(providers=providers) as c:
            info = c.get(f"/v1/models/{name}").json()["latest"]
            assert info["providers"][0] == providers.split(",")[0]
            response = c.post(f"/v1/models/{name}/predict", json=body)
            assert response.status_code == 200, response.text
            answers[providers] = response.json()["series"]
    gpu, cpu = answers.values()
    for g, c_ in zip(gpu, cpu, strict=True):
        np.testing.assert_allclose(g["predictions"], c_["predictions"], atol=1e-5)
        np.testing.assert_allclose(g["forecast"], c_["forecast"], atol=1e-5)
        np.testing.assert_allclose(g["state"]["h"], c_["state"]["h"], atol=1e-5)
        if "c" in c_["state"]:
            np.testing.assert_allclose(g["state"]["c"], c_["state"]["c"], atol=1e-5)
