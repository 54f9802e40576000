"""The in-memory session store: one process, bounded in count and idle time.

Eviction rule: a session whose idle TTL has passed is gone (it is dropped when
next touched, and expired sessions are swept before a new one is admitted).
Live sessions are never evicted to make room: when ``max_sessions`` live
sessions exist, creating another raises StoreFull (the API answers 503), so a
client never loses state it is still using because of someone else's load.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from service.sessions.record import SessionRecord
from service.sessions.store import Advance, StoreFull


class MemoryStore:
    """Sessions in a dict ordered by last update (oldest first)."""

    kind = "memory"

    def __init__(
        self, *, max_sessions: int, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        if max_sessions < 1 or ttl_s <= 0:
            raise ValueError("max_sessions must be >= 1 and ttl_s > 0")
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self._clock = clock
        # Every method below runs without awaiting, so each one is atomic on
        # the event loop: no lock is needed for compare-and-advance here.
        self._records: OrderedDict[str, SessionRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def _expired(self, record: SessionRecord, now: float) -> bool:
        return now >= record.updated_at + self.ttl_s

    def _sweep(self, now: float) -> None:
        # Records are ordered by updated_at and share one TTL, so the expired
        # ones are exactly a prefix of the order.
        while self._records:
            oldest = next(iter(self._records.values()))
            if not self._expired(oldest, now):
                break
            self._records.popitem(last=False)

    def _live(self, session_id: str) -> SessionRecord | None:
        record = self._records.get(session_id)
        if record is not None and self._expired(record, self._clock()):
            del self._records[session_id]
            return None
        return record

    async def create(self, record: SessionRecord) -> None:
        self._sweep(self._clock())
        if len(self._records) >= self.max_sessions:
            raise StoreFull(
                f"the in-memory session store holds its maximum of {self.max_sessions} "
                "live sessions; close unused sessions or raise SEQCAST_SESSION_MAX"
            )
        self._records[record.id] = record

    async def get(self, session_id: str) -> SessionRecord | None:
        return self._live(session_id)

    async def delete(self, session_id: str) -> bool:
        return self._live(session_id) is not None and self._records.pop(session_id) is not None

    async def compare_and_advance(self, expected_offset: int, record: SessionRecord) -> Advance:
        current = self._live(record.id)
        if current is None:
            return Advance.GONE
        if current.offset != expected_offset:
            return Advance.MOVED
        self._records[record.id] = record
        self._records.move_to_end(record.id)
        return Advance.APPLIED

    async def aclose(self) -> None:
        self._records.clear()
