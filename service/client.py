"""Python clients for seqcast on httpx: `Client` (blocking) and `AsyncClient` (asyncio).

Stateless prediction with the state carried by the caller::

    from service.client import Client

    with Client("http://127.0.0.1:8000") as client:
        first = client.predict("sine-lstm", [0.1, 0.4, 0.7], horizon=3)
        more = client.predict("sine-lstm", [0.9, 1.0], state=first.state)

Server-held sessions, with offsets kept by the client and safe retries::

    with client.create_session("sine-lstm") as session:
        step = session.observe([0.1, 0.4, 0.7], horizon=3)
        step = session.observe([0.9])  # offset 3 is sent for you
        print(step.forecast, session.offset)

`AsyncClient` has the same methods as coroutines, and its sessions are async
context managers::

    async with AsyncClient("http://127.0.0.1:8000") as client:
        async with await client.create_session("sine-lstm") as session:
            step = await session.observe([0.1, 0.4, 0.7])

Every observe carries the offset it applies at, so when a response is lost on
the way back (a timeout, a reset connection, a 502/503/504 from a proxy or a
briefly unreachable Redis) the client sends the very same step again: the
server answers a repeated step from its record instead of applying it twice.
Retries wait as long as the server's `Retry-After` asks, within a total deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx

log = logging.getLogger(__name__)

# Numbers for a one-feature model, rows for several; numpy arrays work too.
ValuesLike = Sequence[float] | Sequence[Sequence[float]]
_RETRY_STATUSES = frozenset({502, 503, 504})


class SeqcastError(Exception):
    """An error answer from the service, in its JSON error shape."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class OffsetConflictError(SeqcastError):
    """The step's offset is not where the session stands; ``current_offset`` says where it is."""

    def __init__(self, status: int, code: str, message: str, field: str | None, current: int):
        super().__init__(status, code, message, field)
        self.current_offset = current


@dataclass(frozen=True)
class Prediction:
    """One series' answer from predict."""

    model: str
    version: int
    forecast: list[Any]  # numbers for one target, rows for several
    state: dict[str, Any] | None  # pass back as ``state=`` to continue exactly
    predictions: list[Any] | None = None
    # One {"level", "lower", "upper"} per level asked for with ``intervals=``.
    intervals: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class Observation:
    """The answer to one session step."""

    start: int  # offset the step applied at
    offset: int  # offset after it
    predictions: list[Any]  # prediction of step t+1 after each observed value t
    forecast: list[Any]
    replayed: bool = False  # True when the server answered a repeated step from its record
    intervals: list[dict[str, Any]] | None = None  # when asked for with ``intervals=``


class _Retrying:
    """The retry policy both clients share: which answers to retry and how long to wait."""

    def __init__(self, retries: int, backoff_s: float, deadline_s: float) -> None:
        self.retries = retries
        self.backoff_s = backoff_s
        self.deadline_s = deadline_s
        self._clock: Callable[[], float] = time.monotonic  # replaced in tests

    def start(self) -> float:
        return self._clock()

    def wait(self, attempt: int, started: float, response: httpx.Response | None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to stop here.

        ``response`` is None after a transport error. The wait is the doubled backoff or
        the server's Retry-After, whichever is longer; no retry starts that would begin
        past ``deadline_s`` since the first attempt.
        """
        wait: float = self.backoff_s * 2**attempt
        if response is not None:
            if response.status_code not in _RETRY_STATUSES:
                return None
            wait = max(wait, _retry_after(response))
        if attempt >= self.retries or self._clock() + wait - started > self.deadline_s:
            return None
        return wait


def _client_options(base_url: str, timeout: float, api_key: str | None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    return {"base_url": base_url, "timeout": timeout, "headers": headers}


class Client(_Retrying):
    """Talks to one seqcast server. Thread-safe as httpx.Client is; close it when done."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.05,
        deadline_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        """``retries``: extra attempts after a transport error or a 502/503/504, waiting
        ``backoff_s`` doubled each time, or as long as the server's ``Retry-After`` says;
        ``deadline_s``: no retry starts once waiting for it would pass this many seconds
        since the first attempt; ``api_key``: sent as ``Authorization: Bearer``."""
        super().__init__(retries, backoff_s, deadline_s)
        self._sleep = time.sleep  # replaced in tests
        self._http = httpx.Client(
            transport=transport, **_client_options(base_url, timeout, api_key)
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request, re-sending it after transport errors and 502/503/504.

        Only requests that are safe to repeat go through here: predict is
        stateless, and a session step carries its offset.
        """
        started = self.start()
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                wait = self.wait(attempt, started, None)
                if wait is None:
                    raise
                _log_retry(method, path, str(exc), wait)
            else:
                wait = self.wait(attempt, started, response)
                if wait is None:
                    return _checked(response)
                _log_retry(method, path, str(response.status_code), wait)
            self._sleep(wait)
            attempt += 1

    def predict(
        self,
        model: str,
        values: ValuesLike,
        *,
        state: dict[str, Any] | None = None,
        horizon: int = 1,
        version: int | None = None,
        return_predictions: bool = False,
        intervals: Sequence[float] | None = None,
    ) -> Prediction:
        """Forecast after ``values``, continuing from ``state`` (from an earlier Prediction);
        ``intervals`` (levels in (0, 1), e.g. [0.8, 0.95]) asks for prediction intervals."""
        path, body = _predict_call(
            model, values, state, horizon, version, return_predictions, intervals
        )
        return _prediction(self.request("POST", path, json=body))

    def create_session(
        self,
        model: str,
        *,
        version: int | None = None,
        warmup: ValuesLike | None = None,
        state: dict[str, Any] | None = None,
    ) -> RemoteSession:
        """Start a server-held session (default version unless given), optionally warmed up."""
        path, body = _create_call(model, version, warmup, state)
        # Not retried: a lost answer would leave an orphan session (it expires by TTL).
        return RemoteSession(self, _checked(self._http.post(path, json=body)).json())

    def session(self, session_id: str) -> RemoteSession:
        """Attach to an existing session (e.g. one another process created)."""
        return RemoteSession(self, self.request("GET", f"/v1/sessions/{session_id}").json())


class AsyncClient(_Retrying):
    """`Client` for asyncio, on httpx.AsyncClient: the same methods, as coroutines."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.05,
        deadline_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        """The arguments mean what they mean for `Client`."""
        super().__init__(retries, backoff_s, deadline_s)
        self._sleep = asyncio.sleep  # replaced in tests
        self._http = httpx.AsyncClient(
            transport=transport, **_client_options(base_url, timeout, api_key)
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """`Client.request`, awaiting: the same retries, waits and deadline."""
        started = self.start()
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                wait = self.wait(attempt, started, None)
                if wait is None:
                    raise
                _log_retry(method, path, str(exc), wait)
            else:
                wait = self.wait(attempt, started, response)
                if wait is None:
                    return _checked(response)
                _log_retry(method, path, str(response.status_code), wait)
            await self._sleep(wait)
            attempt += 1

    async def predict(
        self,
        model: str,
        values: ValuesLike,
        *,
        state: dict[str, Any] | None = None,
        horizon: int = 1,
        version: int | None = None,
        return_predictions: bool = False,
        intervals: Sequence[float] | None = None,
    ) -> Prediction:
        """Forecast after ``values``, continuing from ``state`` (from an earlier Prediction);
        ``intervals`` (levels in (0, 1), e.g. [0.8, 0.95]) asks for prediction intervals."""
        path, body = _predict_call(
            model, values, state, horizon, version, return_predictions, intervals
        )
        return _prediction(await self.request("POST", path, json=body))

    async def create_session(
        self,
        model: str,
        *,
        version: int | None = None,
        warmup: ValuesLike | None = None,
        state: dict[str, Any] | None = None,
    ) -> AsyncRemoteSession:
        """Start a server-held session (default version unless given), optionally warmed up."""
        path, body = _create_call(model, version, warmup, state)
        # Not retried: a lost answer would leave an orphan session (it expires by TTL).
        response = _checked(await self._http.post(path, json=body))
        return AsyncRemoteSession(self, response.json())

    async def session(self, session_id: str) -> AsyncRemoteSession:
        """Attach to an existing session (e.g. one another process created)."""
        response = await self.request("GET", f"/v1/sessions/{session_id}")
        return AsyncRemoteSession(self, response.json())


@dataclass
class _SessionView:
    """What a client knows of a server-held session; it tracks the offset."""

    info: dict[str, Any] = field(repr=False)
    id: str = field(init=False)
    model: str = field(init=False)
    version: int = field(init=False)
    offset: int = field(init=False)

    def __post_init__(self) -> None:
        self.id = self.info["session"]
        self.model = self.info["model"]
        self.version = self.info["version"]
        self.offset = self.info["offset"]

    def _observe_body(
        self, values: ValuesLike, horizon: int, intervals: Sequence[float] | None = None
    ) -> dict[str, Any]:
        body = {"values": _as_json(values), "offset": self.offset, "horizon": horizon}
        if intervals:
            body["intervals"] = list(intervals)
        return body

    def _observed(self, response: httpx.Response) -> Observation:
        answer = response.json()
        self.offset = answer["offset"]
        return Observation(
            start=answer["start"],
            offset=answer["offset"],
            predictions=answer["predictions"],
            forecast=answer["forecast"],
            replayed=response.headers.get("seqcast-replayed") == "true",
            intervals=answer.get("intervals"),
        )

    def _refreshed(self, response: httpx.Response) -> dict[str, Any]:
        self.info = response.json()
        self.offset = self.info["offset"]
        return self.info


class RemoteSession(_SessionView):
    """A session held by the server, seen from a `Client`."""

    def __init__(self, client: Client, info: dict[str, Any]) -> None:
        super().__init__(info)
        self.client = client

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def observe(
        self, values: ValuesLike, *, horizon: int = 1, intervals: Sequence[float] | None = None
    ) -> Observation:
        """Feed the next values at the current offset; exactly once even when retried.

        Raises OffsetConflictError when someone else moved the session; call
        ``refresh()`` to learn the server's offset.
        """
        body = self._observe_body(values, horizon, intervals)
        return self._observed(
            self.client.request("POST", f"/v1/sessions/{self.id}/observe", json=body)
        )

    def refresh(self, *, with_state: bool = False) -> dict[str, Any]:
        """Re-read the session from the server (offset, times, state when asked)."""
        params = {"state": "true"} if with_state else None
        return self._refreshed(self.client.request("GET", f"/v1/sessions/{self.id}", params=params))

    def close(self) -> None:
        """Delete the session on the server; a session already gone is fine."""
        try:
            self.client.request("DELETE", f"/v1/sessions/{self.id}")
        except SeqcastError as exc:
            if exc.status != 404:
                raise


class AsyncRemoteSession(_SessionView):
    """A session held by the server, seen from an `AsyncClient`."""

    def __init__(self, client: AsyncClient, info: dict[str, Any]) -> None:
        super().__init__(info)
        self.client = client

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def observe(
        self, values: ValuesLike, *, horizon: int = 1, intervals: Sequence[float] | None = None
    ) -> Observation:
        """`RemoteSession.observe`, awaiting."""
        body = self._observe_body(values, horizon, intervals)
        return self._observed(
            await self.client.request("POST", f"/v1/sessions/{self.id}/observe", json=body)
        )

    async def refresh(self, *, with_state: bool = False) -> dict[str, Any]:
        """`RemoteSession.refresh`, awaiting."""
        params = {"state": "true"} if with_state else None
        return self._refreshed(
            await self.client.request("GET", f"/v1/sessions/{self.id}", params=params)
        )

    async def close(self) -> None:
        """Delete the session on the server; a session already gone is fine."""
        try:
            await self.client.request("DELETE", f"/v1/sessions/{self.id}")
        except SeqcastError as exc:
            if exc.status != 404:
                raise


def _predict_call(
    model: str,
    values: ValuesLike,
    state: dict[str, Any] | None,
    horizon: int,
    version: int | None,
    return_predictions: bool,
    intervals: Sequence[float] | None = None,
) -> tuple[str, dict[str, Any]]:
    series: dict[str, Any] = {"values": _as_json(values), "horizon": horizon}
    if state is not None:
        series["state"] = state
    if intervals:
        series["intervals"] = list(intervals)
    body = {"series": [series], "return_predictions": return_predictions}
    return f"{_model_path(model, version)}/predict", body


def _prediction(response: httpx.Response) -> Prediction:
    answer = response.json()
    item = answer["series"][0]
    return Prediction(
        model=answer["model"],
        version=answer["version"],
        forecast=item["forecast"],
        state=item.get("state"),
        predictions=item.get("predictions"),
        intervals=item.get("intervals"),
    )


def _create_call(
    model: str,
    version: int | None,
    warmup: ValuesLike | None,
    state: dict[str, Any] | None,
) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {}
    if warmup is not None:
        body["values"] = _as_json(warmup)
    if state is not None:
        body["state"] = state
    return f"{_model_path(model, version)}/sessions", body


def _log_retry(method: str, path: str, why: str, wait: float) -> None:
    log.warning("%s %s failed (%s); retrying in %.2fs", method, path, why, wait)


def _as_json(values: ValuesLike | Any) -> list[Any]:
    """Values as JSON lists: numbers, or rows of numbers; numpy arrays welcome."""
    if hasattr(values, "tolist"):  # numpy arrays and scalars, without importing numpy
        listed: list[Any] = values.tolist()
        return listed
    return [v.tolist() if hasattr(v, "tolist") else v for v in values]


def _model_path(model: str, version: int | None) -> str:
    return f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else "")


def _retry_after(response: httpx.Response) -> float:
    """Seconds the server asks to wait (Retry-After in seconds), 0 when it does not say."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "0")))
    except ValueError:  # an HTTP date: not sent by seqcast; fall back to the backoff
        return 0.0


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise SeqcastError(response.status_code, "http_error", response.text[:500]) from None
    if response.status_code == 409 and "offset" in error:
        raise OffsetConflictError(
            409, error["code"], error["message"], error.get("field"), int(error["offset"])
        )
    raise SeqcastError(
        response.status_code, error.get("code", "http_error"), error["message"], error.get("field")
    )
