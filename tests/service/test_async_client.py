"""The asyncio client (service.client.AsyncClient) against a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.client import AsyncClient, OffsetConflictError, SeqcastError
from service.settings import Settings
from tests.service.sessions_support import live_server, oracle, series


@pytest.fixture(scope="module")
def base_url(model_dir: Path) -> Iterator[str]:
    with live_server(Settings(model_dir=model_dir)) as address:
        yield f"http://{address}"


class FlakyAsyncTransport(httpx.AsyncBaseTransport):
    """Real HTTP, except that chosen requests fail: "drop-request", "drop-response" or "503"."""

    def __init__(self, plan: Callable[[httpx.Request, int], str | None]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.plan = plan
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        action = self.plan(request, self.attempts)
        if action == "drop-request":
            raise httpx.ConnectError("connection refused (injected)", request=request)
        if action == "503":
            return httpx.Response(
                503,
                headers={"Retry-After": "2"},
                json={"error": {"status": 503, "code": "busy", "message": "busy", "field": None}},
                request=request,
            )
        response = await self.inner.handle_async_request(request)
        if action == "drop-response":
            await response.aread()
            await response.aclose()
            raise httpx.ReadError("connection reset while reading (injected)", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_predict_with_carried_state_equals_one_shot(base_url: str, model_dir: Path) -> None:
    values = series(20, seed=21)
    preds, h, c = oracle(model_dir, "tiny-lstm", 2).run(values)

    async def stream() -> tuple[list[float], dict[str, object] | None]:
        got: list[float] = []
        state = None
        async with AsyncClient(base_url) as client:
            for chunk in np.split(values[:, 0], [5, 6, 14]):
                answer = await client.predict(
                    "tiny-lstm", chunk, state=state, return_predictions=True
                )
                assert (answer.model, answer.version) == ("tiny-lstm", 2)
                assert answer.predictions is not None
                got += answer.predictions
                state = answer.state
        return got, state

    got, state = asyncio.run(stream())
    np.testing.assert_allclose(got, preds[:, 0], atol=1e-5)
    assert state is not None
    np.testing.assert_allclose(state["h"], h, atol=1e-5)  # type: ignore[arg-type]
    np.testing.assert_allclose(state["c"], c, atol=1e-5)  # type: ignore[arg-type]


def test_concurrent_sessions_and_lost_answers(base_url: str, model_dir: Path) -> None:
    """Eight sessions stepped concurrently; each one's second answer is lost once."""
    values = series(12, seed=22)
    preds, h, _ = oracle(model_dir, "tiny-gru", 1).run(values)
    observes: list[str] = []

    def plan(request: httpx.Request, _: int) -> str | None:
        if not request.url.path.endswith("/observe"):
            return None
        observes.append(request.url.path)
        # The step at offset 3 is applied, but its first answer never arrives.
        first_try = observes.count(request.url.path) == 2
        return "drop-response" if first_try and b'"offset":3' in request.content else None

    async def one(client: AsyncClient) -> tuple[list[float], list[bool], dict[str, object]]:
        async with await client.create_session("tiny-gru", version=1) as session:
            got: list[float] = []
            replayed = []
            for chunk in np.split(values[:, 0], [3, 7]):
                step = await session.observe(chunk)
                got += step.predictions
                replayed.append(step.replayed)
            assert session.offset == 12
            return got, replayed, await session.refresh(with_state=True)

    async def run_all() -> list[tuple[list[float], list[bool], dict[str, object]]]:
        transport = FlakyAsyncTransport(plan)
        async with AsyncClient(base_url, transport=transport, backoff_s=0.01) as client:
            return list(await asyncio.gather(*(one(client) for _ in range(8))))

    results = asyncio.run(run_all())
    assert len(observes) == 8 * 4  # three steps each, the lost one sent twice
    for got, replayed, info in results:
        assert replayed == [False, True, False]
        np.testing.assert_allclose(got, preds[:, 0], atol=1e-5)
        assert info["offset"] == 12  # nothing applied twice
        np.testing.assert_allclose(info["state"]["h"], h, atol=1e-5)  # type: ignore[index]


def test_errors_are_typed_and_sessions_attach(base_url: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(base_url) as client:
            mine = await client.create_session("tiny-gru")
            theirs = await client.session(mine.id)
            await mine.observe([1.0, 2.0])
            with pytest.raises(OffsetConflictError) as conflict:
                await theirs.observe([3.0])
            assert (conflict.value.current_offset, conflict.value.field) == (2, "offset")
            await theirs.refresh()
            assert (await theirs.observe([3.0])).offset == 3
            with pytest.raises(SeqcastError) as unknown:
                await client.predict("no-such-model", [1.0])
            assert (unknown.value.status, unknown.value.code) == (404, "model_not_found")
            with pytest.raises(SeqcastError) as bad:
                await mine.observe([1.0], horizon=0)
            assert (bad.value.status, bad.value.field) == (422, "horizon")
            await mine.close()
            await mine.close()  # closing twice is fine
            with pytest.raises(SeqcastError) as gone:
                await client.session(mine.id)
            assert gone.value.status == 404

    asyncio.run(scenario())


def test_retry_after_is_honoured_within_the_deadline(base_url: str) -> None:
    waits: list[float] = []
    clock = [0.0]

    async def sleep(seconds: float) -> None:  # a clock that only the waits move
        waits.append(seconds)
        clock[0] += seconds

    async def predict(busy: int, deadline_s: float) -> tuple[int, object]:
        transport = FlakyAsyncTransport(lambda req, n: "503" if n <= busy else None)
        async with AsyncClient(
            base_url, transport=transport, backoff_s=0.01, deadline_s=deadline_s
        ) as client:
            client._sleep, client._clock = sleep, lambda: clock[0]
            try:
                outcome: object = (await client.predict("tiny-rnn", [1.0])).forecast
            except SeqcastError as exc:
                outcome = exc.status
        return transport.attempts, outcome

    attempts, outcome = asyncio.run(predict(busy=2, deadline_s=10))
    assert waits == [2.0, 2.0]  # the server's Retry-After, not the 0.01 s backoff
    assert attempts == 3
    assert isinstance(outcome, list)
    waits.clear()
    clock[0] = 0.0
    # With 3 s to spend, a second 2 s wait would pass the deadline: the 503 comes back.
    assert asyncio.run(predict(busy=5, deadline_s=3)) == (2, 503)
    assert waits == [2.0]


def test_the_async_client_sends_its_api_key(model_dir: Path) -> None:
    key = "async-client-key-" + "z" * 20

    async def scenario(url: str) -> None:
        async with AsyncClient(url) as anonymous:
            with pytest.raises(SeqcastError) as refused:
                await anonymous.predict("tiny-rnn", [1.0])
            assert refused.value.status == 401
        async with AsyncClient(url, api_key=key) as client:
            assert len((await client.predict("tiny-rnn", [1.0, 2.0])).forecast) == 1

    with live_server(Settings(model_dir=model_dir, api_keys=f"tester:{key}")) as address:
        asyncio.run(scenario(f"http://{address}"))
