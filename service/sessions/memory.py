"""The in-memory session store: one process, bounded in count and idle time.

Eviction rule: a session whose idle TTL has passed is gone (it is dropped when
next touched, and expired sessions are swept before a new one is admitted).
Live sessions are never evicted to make room: when ``max_sessions`` live
sessions exist, creating another raises StoreFull (the API answers 503), so a
client never loses state it is still using because of someone else's load.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable

from service.sessions.quota import TokenBucket
from service.sessions.record import SessionRecord
from service.sessions.store import Advance, OwnerQuota, QuotaExceeded, SessionExists, StoreFull


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
        self._live_per_owner: Counter[str] = Counter()
        self._buckets: dict[str, TokenBucket] = {}

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
            self._drop(oldest.id)

    def _drop(self, session_id: str) -> None:
        record = self._records.pop(session_id)
        self._live_per_owner[record.owner] -= 1
        if not self._live_per_owner[record.owner]:
            del self._live_per_owner[record.owner]

    def _live(self, session_id: str) -> SessionRecord | None:
        record = self._records.get(session_id)
        if record is not None and self._expired(record, self._clock()):
            self._drop(session_id)
            return None
        return record

    async def live_sessions(self, owner: str) -> int:
        """Live sessions of one owner (expired ones are swept first)."""
        self._sweep(self._clock())
        return self._live_per_owner[owner]

    async def create(self, record: SessionRecord, quota: OwnerQuota) -> None:
        now = self._clock()
        self._sweep(now)
        if self._live(record.id) is not None:
            raise SessionExists("a live session already has this id")
        if len(self._records) >= self.max_sessions:
            raise StoreFull(
                f"the in-memory session store holds its maximum of {self.max_sessions} "
                "live sessions; close unused sessions or raise SEQCAST_SESSION_MAX"
            )
        if self._live_per_owner[record.owner] >= quota.max_live:
            raise QuotaExceeded(
                f"this API key holds its quota of {quota.max_live} live sessions "
                "(SEQCAST_SESSION_QUOTA_LIVE); delete sessions it no longer uses",
                retry_after_s=5.0,
            )
        bucket = self._buckets.setdefault(record.owner, TokenBucket(float(quota.burst), now))
        wait = bucket.take(now, quota.rate, quota.burst)
        if wait > 0:
            raise QuotaExceeded(
                f"this API key creates sessions faster than its quota of {quota.rate:g}/s "
                f"(burst {quota.burst}; SEQCAST_SESSION_QUOTA_RATE)",
                retry_after_s=wait,
            )
        self._records[record.id] = record
        self._live_per_owner[record.owner] += 1

    async def get(self, session_id: str) -> SessionRecord | None:
        return self.get_now(session_id)

    def get_now(self, session_id: str) -> SessionRecord | None:
        """`get`, answered at once (service.sessions.store.InProcessStore)."""
        return self._live(session_id)

    async def delete(self, session_id: str, owner: str) -> bool:
        record = self._live(session_id)
        if record is None or record.owner != owner:
            return False
        self._drop(session_id)
        return True

    async def compare_and_advance(self, expected: SessionRecord, record: SessionRecord) -> Advance:
        return self.compare_and_advance_now(expected, record)

    def compare_and_advance_now(self, expected: SessionRecord, record: SessionRecord) -> Advance:
        """`compare_and_advance`, answered at once (InProcessStore)."""
        current = self._live(record.id)
        if current is None:
            return Advance.GONE
        if current.offset != expected.offset or current.token != expected.token:
            return Advance.MOVED
        self._records[record.id] = record
        self._records.move_to_end(record.id)
        return Advance.APPLIED

    async def ping(self) -> bool:
        return True  # in this process: there whenever the process is

    async def aclose(self) -> None:
        self._records.clear()
        self._live_per_owner.clear()
