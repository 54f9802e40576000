"""Build the session manager the settings ask for: its store, model runner and encoder."""

from __future__ import annotations

import logging

import numpy as np

from service.repository import LoadedModel, ModelRepository
from service.runner import ModelRunner
from service.sessions.manager import SessionManager
from service.sessions.memory import MemoryStore
from service.sessions.redis_store import RedisStore
from service.sessions.store import SessionStore
from service.settings import Settings

log = logging.getLogger(__name__)


def make_store(settings: Settings) -> SessionStore:
    """The store named by SEQCAST_SESSION_STORE."""
    if settings.session_store == "redis":
        log.info("sessions are kept in Redis at %s", _redacted(settings.redis_url))
        return RedisStore(
            settings.redis_url,
            ttl_s=settings.session_ttl_s,
            timeout_s=settings.redis_timeout_s,
            max_connections=settings.redis_max_connections,
        )
    if settings.workers > 1:
        # Each worker process would hold its own sessions and see none of the others'.
        log.warning(
            "SEQCAST_SESSION_STORE=memory with %d workers: a session lives in one worker "
            "process only; use SEQCAST_SESSION_STORE=redis to share sessions",
            settings.workers,
        )
    return MemoryStore(max_sessions=settings.session_max, ttl_s=settings.session_ttl_s)


def encode_rows(model: LoadedModel, rows: np.ndarray) -> np.ndarray:
    """(time, targets) as the predict endpoint answers it: flat for a single target."""
    if model.manifest.architecture.output_size == 1:
        return np.ascontiguousarray(rows[:, 0])
    return np.ascontiguousarray(rows)


# Sessions whose latest record a replica keeps, so that a stream that keeps coming
# to the same replica costs one Redis round trip per step instead of two.
RECENT_RECORDS = 10_000


def make_session_manager(
    settings: Settings, repository: ModelRepository, runner: ModelRunner
) -> SessionManager:
    store = make_store(settings)
    return SessionManager(
        store,
        repository,
        runner.run,
        encode_rows,
        # Reading the memory store costs nothing; only a remote store gains from this.
        recent_records=RECENT_RECORDS if store.kind == "redis" else 0,
    )


def _redacted(url: str) -> str:
    # Never log a password embedded in the URL.
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest
