"""The Redis session store: sessions shared by every replica that points at one Redis.

A session is one hash, ``seqcast:session:<id>``, whose key expires after the
idle TTL (PEXPIRE, refreshed by every applied step). The recurrent state is
stored as raw float32 bytes. Compare-and-advance is a Lua script, so the offset
check and the write are one atomic operation on the server whichever replica
sends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.redaction import redact
from service.sessions.record import AppliedStep, SessionRecord
from service.sessions.store import Advance, OwnerQuota, QuotaExceeded, StoreUnavailable

log = logging.getLogger(__name__)

KEY_PREFIX = "seqcast:session:"
# Per owner (API key name): a sorted set of its sessions scored by expiry (ms), and its
# create-rate bucket. Both are kept by the scripts below, atomically with the sessions.
OWNER_PREFIX = "seqcast:owner:"
RATE_PREFIX = "seqcast:rate:"

# The shebang makes Redis (7+) refuse a writing script up front when it is out of memory
# under noeviction; an unflagged script that began with a write could write past it.
_WRITES = "#!lua\n"
_DELETES = "#!lua flags=allow-oom\n"  # deleting frees memory: allowed when full

# Server time in ms: one clock for every replica.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: session, owner set, owner bucket. ARGV[1] TTL ms, [2] max live, [3] rate per s,
# [4] burst, [5] session id, [6..] field, value, ...
# Returns {0, 0} when created, {1, retry ms} over the live quota, {2, retry ms} over rate.
_CREATE_LUA = (
    _WRITES
    + _NOW
    + """
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return {1, 5000} end
local rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[3], 'tokens', 'stamp')
local tokens = tonumber(b[1]) or burst
local stamp = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - stamp) / 1000 * rate)
if tokens < 1 then return {2, math.ceil((1 - tokens) / rate * 1000)} end
redis.call('HSET', KEYS[3], 'tokens', tostring(tokens - 1), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[3], math.ceil(burst / rate * 1000) + 1000)
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[5])
redis.call('PEXPIRE', KEYS[2], ttl)
return {0, 0}
"""
)

# KEYS: session, owner set. ARGV[1] expected offset, [2] expected write token, [3] TTL
# ms, [4] session id, [5..] field, value, ... Offsets are always written as str(int),
# so comparing the strings compares the numbers. A record written before write tokens
# existed has none: it matches the empty token it is read with.
_ADVANCE_LUA = (
    _WRITES
    + """
local current = redis.call('HMGET', KEYS[1], 'offset', 'token')
if not current[1] then return -1 end
if current[1] ~= ARGV[1] or (current[2] or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""
    + _NOW
    + """
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
)

# KEYS: session, owner set. ARGV[1] owner, [2] session id. 1 when deleted.
_DELETE_LUA = (
    _DELETES
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
if owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""
)

_T = TypeVar("_T")


def _step_args(record: SessionRecord) -> list[Any]:
    """Field, value, ... of what a step changes; every one is always written (b"" for
    absent), so an advance replaces them all."""
    last = record.last_step
    return [
        "offset", str(record.offset),
        "token", record.token,
        "h", record.h,
        "c", record.c or b"",
        "updated_at", repr(record.updated_at),
        "last_offset", str(last.offset) if last else "",
        "last_digest", last.digest if last else "",
        "last_answer", (last.answer or b"") if last else b"",
        "last_h", (last.h_before or b"") if last else b"",
        "last_c", (last.c_before or b"") if last else b"",
    ]  # fmt: skip


def _create_args(record: SessionRecord) -> list[Any]:
    """Field, value, ... of a new session: what never changes, then what steps change."""
    fixed = [
        "model", record.model,
        "version", str(record.version),
        "owner", record.owner,
        "created_at", repr(record.created_at),
    ]  # fmt: skip
    return fixed + _step_args(record)


def _record(session_id: str, raw: dict[bytes, bytes]) -> SessionRecord:
    last = None
    if raw.get(b"last_offset"):
        last = AppliedStep(
            offset=int(raw[b"last_offset"]),
            digest=raw[b"last_digest"].decode(),
            answer=raw.get(b"last_answer") or None,
            h_before=raw.get(b"last_h") or None,
            c_before=raw.get(b"last_c") or None,
        )
    return SessionRecord(
        id=session_id,
        model=raw[b"model"].decode(),
        version=int(raw[b"version"]),
        offset=int(raw[b"offset"]),
        h=raw[b"h"],
        c=raw.get(b"c") or None,
        created_at=float(raw[b"created_at"]),
        updated_at=float(raw[b"updated_at"]),
        last_step=last,
        owner=raw.get(b"owner", b"").decode(),
        token=raw.get(b"token", b"").decode(),
    )


class RedisStore:
    """Sessions in Redis through redis-py's asyncio client and its connection pool."""

    kind = "redis"

    def __init__(
        self, url: str, *, ttl_s: float, timeout_s: float = 1.0, max_connections: int = 64
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.ttl_s = ttl_s
        self.url = url  # may hold a password: never logged or answered as it is
        # At most max_connections commands are in flight; more concurrent steps queue
        # on a semaphore, first come first served. (redis-py's default pool fails at
        # once with "Too many connections", and its blocking pool lets newcomers
        # overtake waiters, which gave multi-second tails under load.) Redis serves
        # commands one at a time, so a few dozen connections keep it busy.
        # Short timeouts and one quick retry: when Redis is down the caller should get
        # a 503 promptly rather than wait out redis-py's default ten retries. The pool
        # drops a broken connection and dials a new one on the next command, which is
        # how the store recovers by itself.
        self._slots = asyncio.Semaphore(max_connections)
        pool = aioredis.ConnectionPool.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), retries=1),
            decode_responses=False,
        )
        self._redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._create = self._redis.register_script(_CREATE_LUA)
        self._advance = self._redis.register_script(_ADVANCE_LUA)
        self._delete = self._redis.register_script(_DELETE_LUA)

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl_s * 1000))

    async def _call(self, what: str, op: Callable[[], Awaitable[_T]]) -> _T:
        try:
            async with self._slots:
                return await op()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            # The message may name the host; it goes to the log (redacted), not to clients.
            log.warning("session store: redis %s failed at %s: %s", what, redact(self.url), exc)
            raise StoreUnavailable("session store unavailable") from exc
        except (OutOfMemoryError, ReadOnlyError) as exc:
            # Reachable but refusing writes: full under noeviction, or a read-only replica.
            log.warning("session store: redis %s refused at %s: %s", what, redact(self.url), exc)
            raise StoreUnavailable("session store unavailable: it refuses writes") from exc
        except RedisError as exc:
            # Anything else Redis answers (e.g. refused by its configuration) is the
            # store's trouble, not the client's: 503, with the reason in the log.
            log.warning("session store: redis %s error at %s: %s", what, redact(self.url), exc)
            raise StoreUnavailable("session store unavailable") from exc

    async def create(self, record: SessionRecord, quota: OwnerQuota) -> None:
        keys = [KEY_PREFIX + record.id, OWNER_PREFIX + record.owner, RATE_PREFIX + record.owner]
        args: list[Any] = [self._ttl_ms, quota.max_live, quota.rate, quota.burst, record.id]
        args += _create_args(record)

        async def op() -> list[int]:
            result: list[int] = await self._create(keys=keys, args=args)
            return result

        refused, retry_ms = await self._call("create", op)
        if refused == 1:
            raise QuotaExceeded(
                f"this API key holds its quota of {quota.max_live} live sessions "
                "(SEQCAST_SESSION_QUOTA_LIVE); delete sessions it no longer uses",
                retry_after_s=retry_ms / 1000,
            )
        if refused == 2:
            raise QuotaExceeded(
                f"this API key creates sessions faster than its quota of {quota.rate:g}/s "
                f"(burst {quota.burst}; SEQCAST_SESSION_QUOTA_RATE)",
                retry_after_s=retry_ms / 1000,
            )

    async def get(self, session_id: str) -> SessionRecord | None:
        async def op() -> dict[bytes, bytes]:
            raw = await self._redis.hgetall(KEY_PREFIX + session_id)
            # decode_responses=False: keys and values are bytes.
            return cast(dict[bytes, bytes], raw)

        raw = await self._call("get", op)
        return _record(session_id, raw) if raw else None

    async def delete(self, session_id: str, owner: str) -> bool:
        keys = [KEY_PREFIX + session_id, OWNER_PREFIX + owner]

        async def op() -> int:
            n: int = await self._delete(keys=keys, args=[owner, session_id])
            return n

        return await self._call("delete", op) > 0

    async def live_sessions(self, owner: str) -> int:
        """Live sessions of one owner (by their expiry scores in the owner's set)."""

        async def op() -> int:
            now_s, now_us = await self._redis.time()
            n: int = await self._redis.zcount(
                OWNER_PREFIX + owner, f"({now_s * 1000 + now_us // 1000}", "+inf"
            )
            return n

        return await self._call("count", op)

    async def compare_and_advance(self, expected: SessionRecord, record: SessionRecord) -> Advance:
        keys = [KEY_PREFIX + record.id, OWNER_PREFIX + record.owner]
        args: list[Any] = [str(expected.offset), expected.token, self._ttl_ms, record.id]
        args += _step_args(record)

        async def op() -> int:
            result: int = await self._advance(keys=keys, args=args)
            return result

        result = await self._call("advance", op)
        return {1: Advance.APPLIED, 0: Advance.MOVED}.get(result, Advance.GONE)

    async def ping(self) -> bool:
        """True when Redis answers; never raises."""
        try:
            async with self._slots:
                return bool(await self._redis.ping())
        except (RedisError, OSError):  # down, timed out, refusing (e.g. a wrong password)
            return False

    async def aclose(self) -> None:
        await self._redis.aclose()
