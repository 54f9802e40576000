"""A session store that measures the store it wraps: latency, errors, live sessions, spans.

Installed by service.sessions.factory (through the session hooks) around whichever store
the settings name, so the stores themselves know nothing of metrics. Everything else is
the wrapped store's: other attributes are looked up on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

from service.sessions.record import SessionRecord
from service.sessions.store import (
    Advance,
    OwnerQuota,
    QuotaExceeded,
    SessionExists,
    SessionStore,
    StoreFull,
)
from service.telemetry.families import Value, observe_all
from service.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from service.telemetry.tracing import Tracing

_T = TypeVar("_T")
_OPERATIONS = ("create", "get", "delete", "live_sessions", "compare_and_advance", "ping")
_REFUSALS = (StoreFull, QuotaExceeded, SessionExists)  # the store answered: no store error


class MeasuredStore:
    """SessionStore over another SessionStore, timing and counting every call."""

    def __init__(self, inner: SessionStore, metrics: Metrics | None, tracing: Tracing | None):
        self.inner = inner
        self.kind = inner.kind
        self.ttl_s = inner.ttl_s
        self._tracing = tracing
        self._timers: dict[str, tuple[Value, Value]] = {}
        if metrics is not None:
            duration = metrics.family["store_duration"]
            errors = metrics.family["store_errors"]
            self._timers = {
                op: (duration.labels(self.kind, op), errors.labels(self.kind, op))
                for op in _OPERATIONS
            }
        # Stores that can count their sessions (the memory store) report them: in one
        # process when scraped, with several workers after every call.
        live = metrics.sessions_live if metrics is not None and _counts(inner) else None
        local = metrics is not None and not metrics.shared
        self._live = None if local else live
        if local and live is not None:
            assert metrics is not None
            metrics.before_scrape(lambda: live.set(len(inner)))  # type: ignore[arg-type]
        # An in-process store's calls that answer at once (InProcessStore), measured
        # here without a coroutine; offered only without tracing (no span per call).
        self.get_now: Any = None
        self.compare_and_advance_now: Any = None
        if tracing is None and getattr(inner, "get_now", None) is not None:
            self._inner_get_now = inner.get_now  # type: ignore[attr-defined]
            self._inner_advance_now = inner.compare_and_advance_now  # type: ignore[attr-defined]
            self.get_now = self._get_now
            self.compare_and_advance_now = self._advance_now
            # One process: the durations wait in a list until the next scrape.
            self._took: dict[str, list[float]] | None = None
            if local:
                assert metrics is not None
                self._took = {"get": [], "compare_and_advance": []}
                metrics.before_scrape(self._flush)

    def __getattr__(self, name: str) -> Any:
        # Only for names not found here: the wrapped store's own attributes.
        return getattr(self.inner, name)

    async def _measure(self, operation: str, call: Awaitable[_T]) -> _T:
        timers = self._timers.get(operation)
        span = self._tracing.store_span(self.kind, operation) if self._tracing else None
        start = perf_counter()
        try:
            if span is None:
                result = await call
            else:
                with span:
                    result = await call
        except _REFUSALS:
            raise
        except Exception:  # not BaseException: a cancelled request is no store error
            if timers is not None:
                timers[1].inc()
            raise
        finally:
            if timers is not None:
                timers[0].observe(perf_counter() - start)
            if self._live is not None:
                self._live.set(len(self.inner))  # type: ignore[arg-type]
        return result

    def _get_now(self, session_id: str) -> SessionRecord | None:
        start = perf_counter()
        try:
            return self._inner_get_now(session_id)  # type: ignore[no-any-return]
        except Exception:
            self._failed("get")
            raise
        finally:
            self._took_now("get", perf_counter() - start)

    def _advance_now(self, expected: SessionRecord, record: SessionRecord) -> Advance:
        start = perf_counter()
        try:
            return self._inner_advance_now(expected, record)  # type: ignore[no-any-return]
        except Exception:
            self._failed("compare_and_advance")
            raise
        finally:
            self._took_now("compare_and_advance", perf_counter() - start)

    def _took_now(self, operation: str, seconds: float) -> None:
        took = self._took
        if took is None:
            timers = self._timers.get(operation)
            if timers is not None:
                timers[0].observe(seconds)
            if self._live is not None:
                self._live.set(len(self.inner))  # type: ignore[arg-type]
            return
        noted = took[operation]
        noted.append(seconds)
        if len(noted) >= 1024:
            self._flush()

    def _failed(self, operation: str) -> None:
        timers = self._timers.get(operation)
        if timers is not None:
            timers[1].inc()

    def _flush(self) -> None:
        """Count the durations noted since the last scrape (one process)."""
        assert self._took is not None
        for operation, noted in self._took.items():
            if noted:
                self._took[operation] = []
                observe_all(self._timers[operation][0], noted)

    # Each returns _measure's coroutine itself: no coroutine of its own around it.

    def create(self, record: SessionRecord, quota: OwnerQuota) -> Coroutine[Any, Any, None]:
        return self._measure("create", self.inner.create(record, quota))

    def get(self, session_id: str) -> Coroutine[Any, Any, SessionRecord | None]:
        return self._measure("get", self.inner.get(session_id))

    def delete(self, session_id: str, owner: str) -> Coroutine[Any, Any, bool]:
        return self._measure("delete", self.inner.delete(session_id, owner))

    def live_sessions(self, owner: str) -> Coroutine[Any, Any, int]:
        return self._measure("live_sessions", self.inner.live_sessions(owner))

    def compare_and_advance(
        self, expected: SessionRecord, record: SessionRecord
    ) -> Coroutine[Any, Any, Advance]:
        return self._measure(
            "compare_and_advance", self.inner.compare_and_advance(expected, record)
        )

    async def ping(self) -> bool:
        answered = await self._measure("ping", self.inner.ping())
        if not answered and "ping" in self._timers:
            self._timers["ping"][1].inc()  # ping never raises: False is its error
        return answered

    async def aclose(self) -> None:
        await self.inner.aclose()


def _counts(store: SessionStore) -> bool:
    return callable(getattr(type(store), "__len__", None))
