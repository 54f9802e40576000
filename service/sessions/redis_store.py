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
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.sessions.record import AppliedStep, SessionRecord
from service.sessions.store import Advance, StoreUnavailable

log = logging.getLogger(__name__)

KEY_PREFIX = "seqcast:session:"

# KEYS[1] session key; ARGV[1] expected offset; ARGV[2] TTL in ms; ARGV[3..] field, value, ...
# Offsets are always written as str(int), so comparing the strings compares the numbers.
_ADVANCE_LUA = """
local current = redis.call('HGET', KEYS[1], 'offset')
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_T = TypeVar("_T")


def _fields(record: SessionRecord) -> dict[str, bytes | str]:
    fields: dict[str, bytes | str] = {
        "model": record.model,
        "version": str(record.version),
        "offset": str(record.offset),
        "h": record.h,
        "created_at": repr(record.created_at),
        "updated_at": repr(record.updated_at),
    }
    if record.c is not None:
        fields["c"] = record.c
    if record.last_step is not None:
        fields["last_offset"] = str(record.last_step.offset)
        fields["last_digest"] = record.last_step.digest
        fields["last_response"] = record.last_step.response
    return fields


def _record(session_id: str, raw: dict[bytes, bytes]) -> SessionRecord:
    last = None
    if b"last_offset" in raw:
        last = AppliedStep(
            offset=int(raw[b"last_offset"]),
            digest=raw[b"last_digest"].decode(),
            response=raw[b"last_response"],
        )
    return SessionRecord(
        id=session_id,
        model=raw[b"model"].decode(),
        version=int(raw[b"version"]),
        offset=int(raw[b"offset"]),
        h=raw[b"h"],
        c=raw.get(b"c"),
        created_at=float(raw[b"created_at"]),
        updated_at=float(raw[b"updated_at"]),
        last_step=last,
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
        self.url = url
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
        self._advance = self._redis.register_script(_ADVANCE_LUA)

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl_s * 1000))

    async def _call(self, what: str, op: Callable[[], Awaitable[_T]]) -> _T:
        try:
            async with self._slots:
                return await op()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("session store: redis %s failed at %s: %s", what, self.url, exc)
            raise StoreUnavailable(f"the Redis session store is unreachable ({exc})") from exc
        except (OutOfMemoryError, ReadOnlyError) as exc:
            # Reachable but refusing writes: full under noeviction, or a read-only replica.
            log.warning("session store: redis %s refused at %s: %s", what, self.url, exc)
            raise StoreUnavailable(f"the Redis session store refuses writes ({exc})") from exc

    async def create(self, record: SessionRecord) -> None:
        async def op() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(KEY_PREFIX + record.id, mapping=_fields(record))  # type: ignore[arg-type]
                pipe.pexpire(KEY_PREFIX + record.id, self._ttl_ms)
                await pipe.execute()

        await self._call("create", op)

    async def get(self, session_id: str) -> SessionRecord | None:
        async def op() -> dict[bytes, bytes]:
            raw = await self._redis.hgetall(KEY_PREFIX + session_id)
            # decode_responses=False: keys and values are bytes.
            return cast(dict[bytes, bytes], raw)

        raw = await self._call("get", op)
        return _record(session_id, raw) if raw else None

    async def delete(self, session_id: str) -> bool:
        async def op() -> int:
            n: int = await self._redis.delete(KEY_PREFIX + session_id)
            return n

        return await self._call("delete", op) > 0

    async def compare_and_advance(self, expected_offset: int, record: SessionRecord) -> Advance:
        args: list[Any] = [str(expected_offset), self._ttl_ms]
        for name, value in _fields(record).items():
            args += [name, value]

        async def op() -> int:
            result: int = await self._advance(keys=[KEY_PREFIX + record.id], args=args)
            return result

        result = await self._call("advance", op)
        return {1: Advance.APPLIED, 0: Advance.MOVED}.get(result, Advance.GONE)

    async def ping(self) -> bool:
        """True when Redis answers; never raises."""
        try:
            async with self._slots:
                return bool(await self._redis.ping())
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return False

    async def aclose(self) -> None:
        await self._redis.aclose()
