"""Server-held sessions: recurrent state kept by the service, advanced exactly once per step."""

from service.sessions.memory import MemoryStore
from service.sessions.record import AppliedStep, SessionRecord
from service.sessions.redis_store import RedisStore
from service.sessions.store import (
    Advance,
    SessionStore,
    SessionStoreError,
    StoreFull,
    StoreUnavailable,
)

__all__ = [
    "Advance",
    "AppliedStep",
    "MemoryStore",
    "RedisStore",
    "SessionRecord",
    "SessionStore",
    "SessionStoreError",
    "StoreFull",
    "StoreUnavailable",
]
