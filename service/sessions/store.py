"""The session store interface shared by the in-memory and the Redis store."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from service.sessions.record import SessionRecord


class SessionStoreError(Exception):
    """Base class of the errors a session store raises."""


class StoreUnavailable(SessionStoreError):
    """The store cannot be reached (e.g. Redis is down); the request may be retried."""


class StoreFull(SessionStoreError):
    """The store holds its maximum number of live sessions and refuses a new one."""


class SessionExists(SessionStoreError):
    """A create named an id that a live session already has (ids chosen by the caller,
    such as an Open Inference Protocol sequence's): nothing was written."""


class QuotaExceeded(SessionStoreError):
    """The creating key is at its live-session quota or over its create rate."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class OwnerQuota:
    """What one owner (API key) may hold and create: checked atomically with a create."""

    max_live: int  # live sessions at once
    rate: float  # creates per second, sustained
    burst: int  # creates at once before the rate applies


class Advance(enum.Enum):
    """Outcome of SessionStore.compare_and_advance."""

    APPLIED = "applied"  # the new record replaced the old one
    MOVED = "moved"  # the stored offset or write token was not the expected one: nothing written
    GONE = "gone"  # the session no longer exists (deleted or expired)


class SessionStore(Protocol):
    """Where sessions live. Every method is safe to call concurrently.

    A session expires when it has not been created or advanced for ``ttl_s``
    seconds; an expired session behaves exactly like a deleted one.
    """

    ttl_s: float
    kind: str  # "memory" or "redis", for logs and the API

    async def create(self, record: SessionRecord, quota: OwnerQuota) -> None:
        """Store a new session; StoreFull when no room is left, QuotaExceeded for its owner,
        SessionExists when its id is taken (checked first: nothing else is counted)."""

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live session with this id, or None."""

    async def delete(self, session_id: str, owner: str) -> bool:
        """Remove a session of `owner`; True when it existed and was theirs."""

    async def live_sessions(self, owner: str) -> int:
        """How many live sessions `owner` holds."""

    async def compare_and_advance(self, expected: SessionRecord, record: SessionRecord) -> Advance:
        """Atomically replace the session ``record.id`` if it still holds ``expected``.

        "Still holds" means the stored offset and write token are ``expected``'s: the
        write it was read from (or made) is the last one, so ``record`` continues the
        state the store has, never one it lost (a rollback, a failover). Refreshes the
        idle TTL when applied.
        """

    async def ping(self) -> bool:
        """True when the store answers; never raises."""

    async def aclose(self) -> None:
        """Release connections; the store is not used afterwards."""


class InProcessStore(SessionStore, Protocol):
    """A store in this process (the memory store) whose read and compare-and-advance
    answer without awaiting: the session manager calls these two on every step instead
    of their coroutines. A wrapper (service.telemetry.store) offers them only when it
    can measure them so."""

    def get_now(self, session_id: str) -> SessionRecord | None:
        """`get`, at once."""

    def compare_and_advance_now(self, expected: SessionRecord, record: SessionRecord) -> Advance:
        """`compare_and_advance`, at once."""
