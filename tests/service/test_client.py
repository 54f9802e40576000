"""The Python client (service.client) against a real uvicorn server on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import Client, OffsetConflictError, SeqcastError
from service.settings import Settings
from tests.service.sessions_support import live_server, oracle, series


@pytest.fixture(scope="module")
def base_url(model_dir: Path) -> Iterator[str]:
    """A seqcast server in a background thread of this process."""
    with live_server(Settings(model_dir=model_dir)) as address:
        yield f"http://{address}"


class FlakyTransport(httpx.BaseTransport):
    """Real HTTP, except that chosen requests fail in a chosen way.

    ``plan(request, attempt)`` returns "drop-request" (fail before sending),
    "drop-response" (send, let the server act, then lose its answer), "503", or
    None (pass through).
    """

    def __init__(self, plan: Callable[[httpx.Request, int], str | None]) -> None:
        self.inner = httpx.HTTPTransport()
        self.plan = plan
        self.attempts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        action = self.plan(request, self.attempts)
        if action == "drop-request":
            raise httpx.ConnectError("connection refused (injected)", request=request)
        if action == "503":
            return httpx.Response(503, json={"error": {"message": "busy"}}, request=request)
        response = self.inner.handle_request(request)
        if action == "drop-response":
            response.read()
            response.close()
            raise httpx.ReadError("connection reset while reading (injected)", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_predict_with_carried_state_equals_one_shot(base_url: str, model_dir: Path) -> None:
    values = series(20, seed=11)
    preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(values)
    got: list[float] = []
    state = None
    with Client(base_url) as client:
        for chunk in np.split(values[:, 0], [7, 8, 15]):
            answer = client.predict(
                "tiny-lstm", chunk.tolist(), state=state, return_predictions=True
            )
            assert (answer.model, answer.version) == ("tiny-lstm", 2)
            assert answer.predictions is not None
            got += answer.predictions
            state = answer.state
    np.testing.assert_allclose(got, preds[:, 0], atol=1e-5)
    assert state is not None
    np.testing.assert_allclose(state["h"], h, atol=1e-5)
    np.testing.assert_allclose(state["c"], c, atol=1e-5)


def test_session_observe_keeps_offsets_and_close_deletes(base_url: str, model_dir: Path) -> None:
    values = series(18, 2, seed=12)
    preds, h, c = oracle(model_dir, "two-in-two-out", 1).run(values)
    with Client(base_url) as client:
        session = client.create_session("two-in-two-out", warmup=values[:3].tolist())
        assert session.offset == 3
        got = []
        for chunk in np.split(values[3:], [5, 6]):
            step = session.observe(chunk, horizon=2)  # numpy rows as they are
            assert len(step.forecast) == 2
            got += step.predictions
        assert session.offset == 18
        np.testing.assert_allclose(got, preds[3:], atol=1e-5)
        info = session.refresh(with_state=True)
        np.testing.assert_allclose(info["state"]["h"], h, atol=1e-5)
        np.testing.assert_allclose(info["state"]["c"], c, atol=1e-5)
        session.close()
        with pytest.raises(SeqcastError) as gone:
            client.session(session.id)
        assert (gone.value.status, gone.value.code) == (404, "session_not_found")
        session.close()  # closing twice is fine


def test_lost_responses_are_retried_without_a_double_step(base_url: str, model_dir: Path) -> None:
    values = series(12, seed=13)
    preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(values)
    observes = {"n": 0}

    def plan(request: httpx.Request, _: int) -> str | None:
        if not request.url.path.endswith("/observe"):
            return None
        observes["n"] += 1
        # Second step: the server applies it, but the answer never arrives. Third step:
        # the first try cannot connect at all.
        return {2: "drop-response", 4: "drop-request"}.get(observes["n"])

    transport = FlakyTransport(plan)
    with Client(base_url, transport=transport, backoff_s=0.01) as client:
        session = client.create_session("tiny-lstm")
        steps = [session.observe(chunk.tolist()) for chunk in np.split(values[:, 0], [4, 8])]
        assert [s.replayed for s in steps] == [False, True, False]
        assert [(s.start, s.offset) for s in steps] == [(0, 4), (4, 8), (8, 12)]
        got = [p for s in steps for p in s.predictions]
        np.testing.assert_allclose(got, preds[:, 0], atol=1e-5)
        info = session.refresh(with_state=True)
        assert info["offset"] == 12  # nothing applied twice
        np.testing.assert_allclose(info["state"]["h"], h, atol=1e-5)
        np.testing.assert_allclose(info["state"]["c"], c, atol=1e-5)
    assert observes["n"] == 5


def test_503_is_retried_and_retries_are_bounded(base_url: str) -> None:
    flaky = FlakyTransport(lambda req, n: "503" if n == 1 else None)
    with Client(base_url, transport=flaky, backoff_s=0.01) as client:
        assert client.predict("tiny-rnn", [1.0]).forecast
    assert flaky.attempts == 2
    dead = FlakyTransport(lambda req, n: "drop-request")
    with (
        Client(base_url, transport=dead, retries=2, backoff_s=0.01) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.predict("tiny-rnn", [1.0])
    assert dead.attempts == 3


def test_offset_conflict_and_errors_are_typed(base_url: str) -> None:
    with Client(base_url) as client:
        mine = client.create_session("tiny-gru")
        theirs = client.session(mine.id)
        mine.observe([1.0, 2.0])
        with pytest.raises(OffsetConflictError) as conflict:
            theirs.observe([3.0])
        assert conflict.value.current_offset == 2
        assert conflict.value.field == "offset"
        theirs.refresh()
        assert theirs.observe([3.0]).offset == 3
        with pytest.raises(SeqcastError) as unknown:
            client.predict("no-such-model", [1.0])
        assert (unknown.value.status, unknown.value.code, unknown.value.field) == (
            404,
            "model_not_found",
            "name",
        )
        with pytest.raises(SeqcastError) as bad:
            mine.observe([1.0], horizon=0)
        assert (bad.value.status, bad.value.field) == (422, "horizon")


def test_the_client_sends_its_api_key(model_dir: Path) -> None:
    key = "client-test-key-" + "q" * 20
    with live_server(Settings(model_dir=model_dir, api_keys=f"tester:{key}")) as address:
        url = f"http://{address}"
        with Client(url) as anonymous, pytest.raises(SeqcastError) as refused:
            anonymous.predict("tiny-rnn", [1.0, 2.0])
        assert refused.value.status == 401
        with Client(url, api_key=key) as client:
            assert len(client.predict("tiny-rnn", [1.0, 2.0]).forecast) == 1
            with client.create_session("tiny-rnn") as session:
                assert session.observe([0.5]).offset == 1


class RetryAfterTransport(FlakyTransport):
    """The first `busy` requests get 503 with Retry-After: 2, as a store outage answers."""

    def __init__(self, busy: int) -> None:
        super().__init__(lambda req, n: None)
        self.busy = busy

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.attempts <= self.busy:
            return httpx.Response(
                503,
                headers={"Retry-After": "2"},
                json={"error": {"status": 503, "code": "session_store_unavailable",
                                "message": "session store unavailable", "field": None}},
                request=request,
            )  # fmt: skip
        return self.inner.handle_request(request)


def test_retry_after_is_honoured_within_the_deadline(base_url: str) -> None:
    waits: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:  # a clock that only the waits move
        waits.append(seconds)
        clock[0] += seconds

    busy = RetryAfterTransport(busy=2)
    with Client(base_url, transport=busy, backoff_s=0.01, deadline_s=10) as client:
        client._sleep, client._clock = sleep, lambda: clock[0]
        assert client.predict("tiny-rnn", [1.0]).forecast
    assert waits == [2.0, 2.0]  # the server's Retry-After, not the 0.01 s backoff
    # With 3 s to spend, a second 2 s wait would pass the deadline: the 503 is raised.
    waits.clear()
    clock[0] = 0.0
    busy = RetryAfterTransport(busy=5)
    with Client(base_url, transport=busy, backoff_s=0.01, deadline_s=3) as client:
        client._sleep, client._clock = sleep, lambda: clock[0]
        with pytest.raises(SeqcastError) as failed:
            client.predict("tiny-rnn", [1.0])
    assert failed.value.status == 503
    assert waits == [2.0]
    assert busy.attempts == 2
