"""Open Inference Protocol sequences on server sessions, in memory and on a real Redis:
chunked sequences equal one call, retries with their offset apply once, ends delete."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.sessions_support import STORES, MakeClient, oracle, series, store_settings
from tests.service.test_v2 import binary_body, infer_json, outputs_of

# (model, the version a sequence starts on by default, features)
MODELS = [("tiny-rnn", 1, 1), ("tiny-lstm", 2, 1), ("two-in-two-out", 1, 2)]


@pytest.fixture(scope="module", params=STORES)
def client(make_client: MakeClient, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    with make_client(**store_settings(request.param, request)) as c:
        yield c


def step(
    client: TestClient,
    name: str,
    values: np.ndarray,  # (T, F)
    sequence: int | str,
    *,
    start: bool = False,
    end: bool = False,
    offset: int | None = None,
    horizon: int = 1,
    state: dict[str, np.ndarray] | None = None,
    version: int | None = None,
    binary: bool = True,
    headers: dict[str, str] | None = None,
) -> Any:
    parameters: dict[str, Any] = {
        "sequence_id": sequence,
        "sequence_start": start,
        "sequence_end": end,
        "horizon": horizon,
    }
    if offset is not None:
        parameters["sequence_offset"] = offset
    inputs = {"values": values.astype(np.float32)[None], **(state or {})}
    url = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/infer"
    outputs = [
        "forecast",
        "predictions",
        "h",
        *(["c"] if "lstm" in name or "two-in-two" in name else []),
    ]
    if binary:
        body, extra = binary_body(inputs, parameters, [(n, True) for n in outputs])
        return client.post(url, content=body, headers={**extra, **(headers or {})})
    return client.post(url, json=infer_json(inputs, parameters, outputs), headers=headers)


def chunks_of(values: np.ndarray) -> list[np.ndarray]:
    return np.split(values, [3, 4, 11])  # four chunks of unequal length


@pytest.mark.parametrize(("name", "version", "features"), MODELS)
@pytest.mark.parametrize("with_offsets", [True, False])
def test_a_sequence_in_four_chunks_equals_one_call(
    client: TestClient, model_dir: Path, name: str, version: int, features: int, with_offsets: bool
) -> None:
    values = series(17, features, seed=3)
    preds, h, c = oracle(model_dir, name, version).run(values)
    sequence = f"chunks-{name}-{with_offsets}"
    got, offset = [], 0
    parts = chunks_of(values)
    for i, chunk in enumerate(parts):
        response = step(
            client,
            name,
            chunk,
            sequence,
            start=i == 0,
            end=i == len(parts) - 1,
            offset=offset if with_offsets else None,
            binary=i % 2 == 0,  # JSON and binary steps alike
        )
        head, out = outputs_of(response)
        assert head["model_version"] == str(version)
        assert head["parameters"] == {
            "sequence_offset": offset,
            "sequence_next_offset": offset + len(chunk),
            "replayed": False,
        }
        offset += len(chunk)
        got.append(out["predictions"][0])
        np.testing.assert_allclose(out["forecast"][0], out["predictions"][0][-1:], atol=1e-6)
    np.testing.assert_allclose(np.concatenate(got), preds, atol=1e-5)
    np.testing.assert_allclose(out["h"][0], h, atol=1e-5)
    if c is not None:
        np.testing.assert_allclose(out["c"][0], c, atol=1e-5)
    # The end deleted the sequence.
    after = step(client, name, values[:1], sequence)
    assert after.status_code == 400
    assert "not active" in after.json()["error"]


def test_a_retried_step_with_its_offset_applies_once(client: TestClient, model_dir: Path) -> None:
    values = series(9, seed=4)
    preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(values)
    first = step(client, "tiny-lstm", values[:4], 77, start=True, offset=0)
    again = step(client, "tiny-lstm", values[:4], 77, start=True, offset=0)  # a retried start
    assert again.headers["seqcast-replayed"] == "true"
    assert outputs_of(again)[0]["parameters"]["replayed"] is True
    assert again.content.replace(b'"replayed":true', b'"replayed":false') == first.content
    second = step(client, "tiny-lstm", values[4:7], 77, offset=4)
    retried = step(client, "tiny-lstm", values[4:7], 77, offset=4)
    assert "seqcast-replayed" not in second.headers
    _, a = outputs_of(second)
    _, b = outputs_of(retried)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    # The state moved once: the next step continues from the state after value 7.
    last = step(client, "tiny-lstm", values[7:], 77, end=True, offset=7)
    _, out = outputs_of(last)
    np.testing.assert_allclose(out["predictions"][0], preds[7:], atol=1e-5)
    np.testing.assert_allclose(out["h"][0], h, atol=1e-5)
    np.testing.assert_allclose(out["c"][0], c, atol=1e-5)


def test_a_step_at_the_wrong_offset_is_409(client: TestClient) -> None:
    values = series(6, seed=5)
    step(client, "tiny-rnn", values[:3], "conflict", start=True, offset=0)
    ahead = step(client, "tiny-rnn", values[3:], "conflict", offset=5)
    assert ahead.status_code == 409
    message = ahead.json()["error"]
    assert "sequence_offset 5" in message
    assert "consumed 3 values" in message
    # A start with offset 0 on a sequence past it is no retry either.
    restart = step(client, "tiny-rnn", values[3:], "conflict", start=True, offset=0)
    assert restart.status_code == 409
    # Without an offset, a start replaces the sequence.
    fresh = step(client, "tiny-rnn", values[3:], "conflict", start=True)
    assert outputs_of(fresh)[0]["parameters"]["sequence_next_offset"] == 3


def test_steps_without_offsets_apply_in_arrival_order(client: TestClient, model_dir: Path) -> None:
    """Equal consecutive steps both apply: without an offset nothing is taken for a retry."""
    values = np.full((4, 1), 0.5)
    preds, _, _ = oracle(model_dir, "tiny-gru", 1).run(values)
    got = [outputs_of(step(client, "tiny-gru", values[:1], 5150, start=True))[1]]
    got += [outputs_of(step(client, "tiny-gru", values[:1], 5150))[1] for _ in range(3)]
    np.testing.assert_allclose(np.concatenate([g["predictions"][0] for g in got]), preds, atol=1e-5)


def test_a_state_seeds_a_sequence(client: TestClient, model_dir: Path) -> None:
    values = series(10, seed=6)
    oracle_ = oracle(model_dir, "tiny-lstm", 2)
    _, h0, c0 = oracle_.run(values[:4])
    preds, h, _ = oracle_.run(values[4:], h0, c0)
    seed = {"h": h0[None].astype(np.float32), "c": c0[None].astype(np.float32)}
    first = step(client, "tiny-lstm", values[4:7], "seeded", start=True, state=seed)
    second = step(client, "tiny-lstm", values[7:], "seeded", end=True)
    got = np.concatenate([outputs_of(r)[1]["predictions"][0] for r in (first, second)])
    np.testing.assert_allclose(got, preds, atol=1e-5)
    np.testing.assert_allclose(outputs_of(second)[1]["h"][0], h, atol=1e-5)
    # After the start the server holds the state: h is refused.
    step(client, "tiny-lstm", values[:2], "seeded-2", start=True)
    refused = step(client, "tiny-lstm", values[2:4], "seeded-2", state=seed)
    assert refused.status_code == 400
    assert "sequence_start" in refused.json()["error"]


def test_a_sequence_stays_on_its_version(client: TestClient, model_dir: Path) -> None:
    values = series(8, seed=7)
    preds, _, _ = oracle(model_dir, "tiny-lstm", 1).run(values)
    first = step(client, "tiny-lstm", values[:5], "pinned", start=True, version=1)
    later = step(client, "tiny-lstm", values[5:], "pinned")  # no version: stays on 1
    assert outputs_of(later)[0]["model_version"] == "1"
    got = np.concatenate([outputs_of(r)[1]["predictions"][0] for r in (first, later)])
    np.testing.assert_allclose(got, preds, atol=1e-5)
    wrong = step(client, "tiny-lstm", values[5:], "pinned", version=2)
    assert wrong.status_code == 400
    assert "runs on version 1" in wrong.json()["error"]


def test_ids_are_typed_and_per_key(make_client: MakeClient) -> None:
    keys = "a:a-secret-0123456789abcdef,b:b-secret-0123456789abcdef"
    as_a = {"X-API-Key": "a-secret-0123456789abcdef"}
    as_b = {"X-API-Key": "b-secret-0123456789abcdef"}
    values = series(4, seed=8)
    with make_client(api_keys=keys) as c:
        assert step(c, "tiny-rnn", values[:2], 42, start=True, headers=as_a).status_code == 200
        # The string "42" is another sequence; key b has no sequence 42.
        for sequence, who in (("42", as_a), (42, as_b)):
            other = step(c, "tiny-rnn", values[2:], sequence, headers=who)
            assert other.status_code == 400
            assert "not active" in other.json()["error"]
        ok = step(c, "tiny-rnn", values[2:], 42, headers=as_a)
        assert outputs_of(ok)[0]["parameters"]["sequence_offset"] == 2
