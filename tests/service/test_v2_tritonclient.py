"""Acceptance: the real tritonclient[http] against real uvicorn servers on one real Redis.

Metadata; infer with JSON and binary tensors (equal to /v1); state carried by the client
over four chunks equals one call; a sequence over four chunks alternating between two
servers equals one call; a retried step with its offset applies once; errors reach the
caller as InferenceServerException with the server's message; the repository extension.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.settings import Settings
from tests.redis_fixture import RedisServer
from tests.service.sessions_support import live_server, oracle, series

USER = "user-secret-0123456789abcdef"
ADMIN = "admin-secret-0123456789abcdef"
KEYS = f"user:{USER},admin:{ADMIN}"


def as_user() -> dict[str, str]:
    # A new dict each time: tritonclient adds its own headers to the one it is given.
    return {"Authorization": f"Bearer {USER}"}


def as_admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def settings(model_dir: Path, redis: RedisServer) -> Settings:
    return Settings(
        model_dir=model_dir,
        session_store="redis",
        redis_url=redis.url,
        api_keys=KEYS,
        admin_keys="admin",
    )


@pytest.fixture(scope="module")
def servers(model_dir: Path, redis_server: RedisServer) -> Iterator[tuple[str, str]]:
    """Two app instances (two uvicorn servers) sharing one Redis."""
    with (
        live_server(settings(model_dir, redis_server)) as one,
        live_server(settings(model_dir, redis_server)) as two,
    ):
        yield one, two


@pytest.fixture
def client(servers: tuple[str, str]) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(servers[0])
    try:
        yield c
    finally:
        c.close()


def values_input(values: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("values", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values.astype(np.float32), binary_data=binary)
    return tensor


def state_inputs(h: np.ndarray, c: np.ndarray | None) -> list[triton.InferInput]:
    found = []
    for name, array in (("h", h), ("c", c)):
        if array is not None:
            tensor = triton.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array)
            found.append(tensor)
    return found


def test_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert not client.is_model_ready("tiny-lstm")  # 401: only health needs no key
    assert client.is_model_ready("tiny-lstm", headers=as_user())
    assert client.is_model_ready("tiny-lstm", "1", headers=as_user())
    assert not client.is_model_ready("nope", headers=as_user())
    meta = client.get_server_metadata(headers=as_user())
    assert meta["name"] == "seqcast"
    assert "model_repository" in meta["extensions"]
    model = client.get_model_metadata("tiny-lstm", headers=as_user())
    assert model["versions"] == ["1", "2"]
    assert [t["name"] for t in model["inputs"]] == ["values", "h", "c"]
    assert {t["name"]: t["shape"] for t in model["outputs"]} == {
        "forecast": [-1, -1, 1],
        "predictions": [-1, -1, 1],
        "h": [-1, 2, 8],
        "c": [-1, 2, 8],
    }
    assert client.get_model_metadata("tiny-lstm", "1", headers=as_user())["name"] == "tiny-lstm"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_equals_v1(
    client: triton.InferenceServerClient, servers: tuple[str, str], binary: bool
) -> None:
    values = series(2 * 12, seed=9).reshape(2, 12)  # two series
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("forecast", "predictions", "h", "c")
    ]
    result = client.infer(
        "tiny-lstm",
        [values_input(values, binary)],
        outputs=outputs,
        parameters={"horizon": 4},
        headers=as_user(),
    )
    body = {
        "series": [{"values": row.tolist(), "horizon": 4} for row in values],
        "return_predictions": True,
    }
    v1 = httpx.post(
        f"http://{servers[0]}/v1/models/tiny-lstm/predict", json=body, headers=as_user()
    ).json()
    for b, series_ in enumerate(v1["series"]):
        np.testing.assert_allclose(
            result.as_numpy("forecast")[b, :, 0], series_["forecast"], atol=1e-6
        )
        np.testing.assert_allclose(
            result.as_numpy("predictions")[b, :, 0], series_["predictions"], atol=1e-6
        )
        np.testing.assert_allclose(result.as_numpy("h")[b], series_["state"]["h"], atol=1e-6)
        np.testing.assert_allclose(result.as_numpy("c")[b], series_["state"]["c"], atol=1e-6)
    assert result.get_response()["model_version"] == "2"


def test_state_carried_by_the_client_over_four_chunks(
    client: triton.InferenceServerClient, model_dir: Path
) -> None:
    values = series(30, seed=10)
    preds, h_end, c_end = oracle(model_dir, "tiny-lstm", 2).run(values)
    got = []
    h: np.ndarray | None = None
    c: np.ndarray | None = None
    for chunk in np.split(values[:, 0], [7, 8, 20]):
        inputs = [values_input(chunk[None])]
        if h is not None:
            inputs += state_inputs(h, c)
        outputs = [triton.InferRequestedOutput(n) for n in ("predictions", "h", "c")]
        result = client.infer("tiny-lstm", inputs, outputs=outputs, headers=as_user())
        got.append(result.as_numpy("predictions")[0, :, 0])
        h, c = result.as_numpy("h"), result.as_numpy("c")
    np.testing.assert_allclose(np.concatenate(got), preds[:, 0], atol=1e-5)
    assert h is not None
    assert c is not None
    np.testing.assert_allclose(h[0], h_end, atol=1e-5)
    np.testing.assert_allclose(c[0], c_end, atol=1e-5)


def test_a_sequence_alternating_between_two_servers(
    servers: tuple[str, str], model_dir: Path
) -> None:
    values = series(26, seed=11)
    preds, h_end, c_end = oracle(model_dir, "tiny-lstm", 2).run(values)
    clients = [triton.InferenceServerClient(address) for address in servers]
    try:
        got, offset = [], 0
        chunks = np.split(values[:, 0], [5, 6, 15])
        for i, chunk in enumerate(chunks):
            result = clients[i % 2].infer(
                "tiny-lstm",
                [values_input(chunk[None])],
                outputs=[triton.InferRequestedOutput(n) for n in ("predictions", "h", "c")],
                sequence_id="e333c95a-07fc-42d2-ab16-033b1a566ed5",
                sequence_start=i == 0,
                sequence_end=i == len(chunks) - 1,
                parameters={"sequence_offset": offset},
                headers=as_user(),
            )
            assert result.get_response()["parameters"]["sequence_offset"] == offset
            offset += len(chunk)
            got.append(result.as_numpy("predictions")[0, :, 0])
        np.testing.assert_allclose(np.concatenate(got), preds[:, 0], atol=1e-5)
        np.testing.assert_allclose(result.as_numpy("h")[0], h_end, atol=1e-5)
        np.testing.assert_allclose(result.as_numpy("c")[0], c_end, atol=1e-5)
    finally:
        for c in clients:
            c.close()


def test_a_retried_step_is_not_applied_twice(servers: tuple[str, str], model_dir: Path) -> None:
    """The answer to a step is lost; the client sends it again, to the other server."""
    values = series(12, seed=12)
    preds, _, _ = oracle(model_dir, "tiny-gru", 1).run(values)
    clients = [triton.InferenceServerClient(address) for address in servers]

    def send(i: int, chunk: np.ndarray, offset: int, **flags: Any) -> Any:
        return clients[i].infer(
            "tiny-gru",
            [values_input(chunk[None])],
            outputs=[triton.InferRequestedOutput("predictions")],
            sequence_id=9001,
            parameters={"sequence_offset": offset},
            headers=as_user(),
            **flags,
        )

    try:
        send(0, values[:4, 0], 0, sequence_start=True)
        lost = send(0, values[4:8, 0], 4)
        retry = send(1, values[4:8, 0], 4)
        assert retry.get_response()["parameters"]["replayed"] is True
        assert lost.get_response()["parameters"]["replayed"] is False
        np.testing.assert_array_equal(retry.as_numpy("predictions"), lost.as_numpy("predictions"))
        last = send(1, values[8:, 0], 8, sequence_end=True)
        np.testing.assert_allclose(last.as_numpy("predictions")[0, :, 0], preds[8:, 0], atol=1e-5)
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize(
    ("model", "values", "kwargs", "status"),
    [
        ("tiny-lstm", np.zeros((1, 3)), {"parameters": {"horizon": 9999}}, "400"),
        ("nope", np.zeros((1, 3)), {}, "404"),
        ("tiny-lstm", np.zeros((1, 3)), {"sequence_id": "never-started"}, "400"),
        ("two-in-one-out", np.zeros((1, 3)), {}, "400"),
    ],
)
def test_errors_reach_the_caller_with_the_servers_message(
    client: triton.InferenceServerClient,
    servers: tuple[str, str],
    model: str,
    values: np.ndarray,
    kwargs: dict[str, Any],
    status: str,
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [values_input(values)], headers=as_user(), **kwargs)
    assert caught.value.status() == status
    # The very message the server answers to the same request.
    params: dict[str, Any] = dict(kwargs.get("parameters", {}))
    if "sequence_id" in kwargs:
        params |= {"sequence_id": kwargs["sequence_id"], "sequence_start": False}
    body = {"inputs": [{"name": "values", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0]}]}
    if params:
        body["parameters"] = params
    raw = httpx.post(f"http://{servers[0]}/v2/models/{model}/infer", json=body, headers=as_user())
    assert str(raw.status_code) == status
    assert caught.value.message() == raw.json()["error"]


def test_a_missing_key_is_refused(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("tiny-gru", [values_input(np.zeros((1, 2)))])
    assert caught.value.status() == "401"
    assert "API key" in caught.value.message()


def test_the_repository_extension(
    model_dir: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    for name in ("tiny-gru", "tiny-rnn"):
        shutil.copytree(model_dir / name, root / name)
    with live_server(settings(root, redis_server)) as address:
        client = triton.InferenceServerClient(address)
        try:
            index = client.get_model_repository_index(headers=as_admin())
            assert [(m["name"], m["version"], m["state"]) for m in index] == [
                ("tiny-gru", "1", "READY"),
                ("tiny-rnn", "1", "READY"),
            ]
            with pytest.raises(InferenceServerException) as caught:
                client.get_model_repository_index(headers=as_user())
            assert caught.value.status() == "403"
            assert "admin key" in caught.value.message()
            client.unload_model("tiny-gru", headers=as_admin())
            assert not client.is_model_ready("tiny-gru", headers=as_user())
            index = client.get_model_repository_index(headers=as_admin())
            assert index[0] == {
                "name": "tiny-gru",
                "version": "1",
                "state": "UNAVAILABLE",
                "reason": "unloaded on request",
            }
            client.load_model("tiny-gru", headers=as_admin())
            assert client.is_model_ready("tiny-gru", headers=as_user())
            with pytest.raises(InferenceServerException) as caught:
                client.load_model("nope", headers=as_admin())
            assert caught.value.status() == "404"
            with pytest.raises(InferenceServerException) as caught:
                client.load_model("tiny-gru", config="{}", headers=as_admin())
            assert "model directory" in caught.value.message()
        finally:
            client.close()
