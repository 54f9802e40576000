"""The session store interface shared by the in-memory and the Redis store."""

from __future__ import annotations

import enum
from typing import Protocol

from service.sessions.record import SessionRecord


class SessionStoreError(Exception):
    """Base class of the errors a session store raises."""


class StoreUnavailable(SessionStoreError):
    """The store cannot be reached (e.g. Redis is down); the request may be retried."""


class StoreFull(SessionStoreError):
    """The store holds its maximum number of live sessions and refuses a new one."""


class Advance(enum.Enum):
    """Outcome of SessionStore.compare_and_advance."""

    APPLIED = "applied"  # the new record replaced the old one
    MOVED = "moved"  # the stored offset was not the expected one: nothing written
    GONE = "gone"  # the session no longer exists (deleted or expired)


class SessionStore(Protocol):
    """Where sessions live. Every method is safe to call concurrently.

    A session expires when it has not been created or advanced for ``ttl_s``
    seconds; an expired session behaves exactly like a deleted one.
    """

    ttl_s: float
    kind: str  # "memory" or "redis", for logs and the API

    async def create(self, record: SessionRecord) -> None:
        """Store a new session; raises StoreFull when no room is left."""

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live session with this id, or None."""

    async def delete(self, session_id: str) -> bool:
        """Remove a session; True when it existed."""

    async def compare_and_advance(self, expected_offset: int, record: SessionRecord) -> Advance:
        """Atomically replace the session ``record.id`` if its offset is still ``expected_offset``.

        Refreshes the idle TTL when applied.
        """

    async def aclose(self) -> None:
        """Release connections; the store is not used afterwards."""
