"""Build the session manager the settings ask for: its store, runner, limits and quotas."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from service.inputs import Limits
from service.redaction import add_secret, redact
from service.repository import ModelLookup
from service.runner import ModelRunner
from service.sessions.manager import SessionManager
from service.sessions.memory import MemoryStore
from service.sessions.redis_store import RedisStore
from service.sessions.store import OwnerQuota, SessionStore
from service.settings import Settings
from service.telemetry.hooks import NO_SESSION_HOOKS, SessionHooks

log = logging.getLogger(__name__)


def make_store(settings: Settings) -> SessionStore:
    """The store named by SEQCAST_SESSION_STORE."""
    if settings.session_store == "redis":
        url = settings.redis_url.get_secret_value()
        password = urlsplit(url).password
        if password:
            add_secret(password)  # also where it would appear outside a URL
        log.info("sessions are kept in Redis at %s", redact(url))
        return RedisStore(
            url,
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


def limits_of(settings: Settings) -> Limits:
    return Limits(
        max_series=settings.max_series_per_request,
        max_values=settings.max_values_per_series,
        max_horizon=settings.max_horizon,
        max_work=settings.max_work_per_request,
    )


# Sessions whose latest record a replica keeps, so that a stream that keeps coming
# to the same replica costs one Redis round trip per step instead of two.
RECENT_RECORDS = 10_000


def make_session_manager(
    settings: Settings,
    repository: ModelLookup,
    runner: ModelRunner,
    hooks: SessionHooks = NO_SESSION_HOOKS,
) -> SessionManager:
    store = hooks.wrap_store(make_store(settings))  # measured when metrics or tracing are on
    quota = OwnerQuota(
        max_live=settings.session_quota_live,
        rate=settings.session_quota_rate,
        burst=settings.session_quota_burst,
    )
    return SessionManager(
        store,
        repository,
        runner.run,
        limits_of(settings),
        quota,
        replay_max_bytes=settings.session_replay_max_bytes,
        # Reading the memory store costs nothing; only a remote store gains from this.
        recent_records=RECENT_RECORDS if store.kind == "redis" else 0,
        hooks=hooks,
    )
