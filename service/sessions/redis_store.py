"""The Redis session store: sessions shared by every replica that points at one Redis.

A session is one hash, ``seqcast:session:<id>``, whose key expires after the
idle TTL (PEXPIRE, refreshed by every applied step). The recurrent state is
stored as raw float32 bytes. Compare-and-advance is a Lua script, so the check
of the offset and write token and the write are one atomic operation on the
server whichever replica sends it; the steps that reach it together share one
script call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.redaction import redact
from service.sessions.record import AppliedStep, SessionRecord
from service.sessions.store import (
    Advance,
    OwnerQuota,
    QuotaExceeded,
    SessionExists,
    StoreUnavailable,
)

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
# Returns {0, 0} when created, {1, retry ms} over the live quota, {2, retry ms} over rate,
# {3, 0} when a session has this id (ids a caller chose: nothing is counted or written).
_CREATE_LUA = (
    _WRITES
    + _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {3, 0} end
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

# Compare-and-advance of one or more sessions, each on its own: the steps that
# arrive together are written by one call (RedisStore.compare_and_advance).
# KEYS: per step, its session and its owner set. ARGV[1] TTL ms, then per step: n
# (how many arguments of this step follow), expected offset, expected write token,
# session id, field, value, ... Returns per step 1 applied, 0 moved, -1 gone.
# Offsets are always written as str(int), so comparing the strings compares the
# numbers. A record written before write tokens existed has none: it matches the
# empty token it is read with.
_ADVANCE_LUA = (
    _WRITES
    + _NOW
    + """
local ttl = ARGV[1]
local expires = now + tonumber(ttl)
local results = {}
local a = 2
for i = 1, #KEYS / 2 do
  local session, owner = KEYS[2 * i - 1], KEYS[2 * i]
  local n = tonumber(ARGV[a])
  local current = redis.call('HMGET', session, 'offset', 'token')
  if not current[1] then
    results[i] = -1
  elseif current[1] ~= ARGV[a + 1] or (current[2] or '') ~= ARGV[a + 2] then
    results[i] = 0
  else
    redis.call('HSET', session, unpack(ARGV, a + 4, a + n))
    redis.call('PEXPIRE', session, ttl)
    redis.call('ZADD', owner, expires, ARGV[a + 3])
    redis.call('PEXPIRE', owner, ttl)
    results[i] = 1
  end
  a = a + n + 1
end
return results
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

_RETRY_AFTER_S = 0.02  # before the one retry of a command whose connection broke
_ADVANCE_BATCH_MAX = 64  # compare-and-advance steps in one script call at most


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


@dataclass(frozen=True, slots=True)
class _Advance:
    """One compare-and-advance waiting for the next script call."""

    keys: list[str]  # its session and its owner set
    args: list[Any]  # expected offset, expected token, session id, field, value, ...
    future: asyncio.Future[int]  # 1 applied, 0 moved, -1 gone


class _Script:
    """A Lua script, sent by its SHA-1 (EVALSHA) and in full (EVAL) when Redis does not
    have it cached: on first use, and after Redis restarted or failed over."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class RedisStore:
    """Sessions in Redis over a few pooled connections, commands packed by hiredis.

    Commands go straight to a connection: packed in C (hiredis.pack_command), sent,
    and the reply read by hiredis's parser. Through redis-py's command layer (its
    pool's bookkeeping, retry wrapper and Python packer) a compare-and-advance cost
    this process twice the CPU (bench/redis_store_bench.py; docs/benchmarks.md).
    """

    kind = "redis"

    def __init__(
        self, url: str, *, ttl_s: float, timeout_s: float = 1.0, max_connections: int = 64
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.ttl_s = ttl_s
        self.url = url  # may hold a password: never logged or answered as it is
        # At most max_connections commands are in flight; more concurrent steps queue
        # on a semaphore, first come first served (a pool that fails at once, or lets
        # newcomers overtake waiters, gave errors or multi-second tails under load).
        # Redis serves commands one at a time, so a few dozen connections keep it busy.
        # Short timeouts and one quick retry on a fresh connection: when Redis is down
        # the caller gets a 503 promptly. A broken connection is dropped, and the next
        # command dials a new one, which is how the store recovers by itself.
        self._slots = asyncio.Semaphore(max_connections)
        # redis-py's pool only parses the URL (host, password, database, TLS) and
        # makes connections with those settings; the store keeps its idle ones.
        self._pool = aioredis.ConnectionPool.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=False,
            protocol=2,  # RESP2 whatever redis-py's default: replies as the code reads them
        )
        self._idle: list[AbstractConnection] = []
        # Compare-and-advance calls waiting for the next flush, and flushes under way.
        self._advancing: list[_Advance] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._create = _Script(_CREATE_LUA)
        self._advance = _Script(_ADVANCE_LUA)
        self._delete = _Script(_DELETE_LUA)

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl_s * 1000))

    def _connect(self) -> AbstractConnection:
        """A new connection with the URL's settings; it dials Redis on first use."""
        return self._pool.connection_class(**self._pool.connection_kwargs)

    async def _send(self, packed: bytes) -> Any:
        """One command's reply; a connection that breaks is dialled again, once."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else self._connect()
            for attempt in (1, 2):
                try:
                    await conn.send_packed_command(packed, check_health=False)
                    reply = await conn.read_response()
                except ResponseError:  # Redis answered: the connection is fine
                    self._idle.append(conn)
                    raise
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    await conn.disconnect()
                    if attempt == 2:
                        raise
                    await asyncio.sleep(_RETRY_AFTER_S)  # Redis may be restarting
                    continue
                except BaseException:  # cancelled mid-command: its reply may be pending
                    await conn.disconnect(nowait=True)
                    raise
                self._idle.append(conn)
                return reply
        raise AssertionError("unreachable")

    async def _command(self, *args: Any) -> Any:
        return await self._send(hiredis.pack_command(args))

    async def _eval(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # EVAL runs it and caches it for the next EVALSHA
            return await self._command("EVAL", script.source, len(keys), *keys, *args)

    async def _call(self, what: str, op: Awaitable[_T]) -> _T:
        try:
            return await op
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
        refused, retry_ms = await self._call("create", self._eval(self._create, keys, args))
        if refused == 3:
            raise SessionExists("a live session already has this id")
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
        flat = await self._call("get", self._command("HGETALL", KEY_PREFIX + session_id))
        return _record(session_id, dict(zip(flat[::2], flat[1::2], strict=True))) if flat else None

    async def delete(self, session_id: str, owner: str) -> bool:
        keys = [KEY_PREFIX + session_id, OWNER_PREFIX + owner]
        deleted = await self._call("delete", self._eval(self._delete, keys, [owner, session_id]))
        return bool(deleted)

    async def live_sessions(self, owner: str) -> int:
        """Live sessions of one owner (by their expiry scores in the owner's set)."""

        async def op() -> int:
            now_s, now_us = await self._command("TIME")
            now_ms = int(now_s) * 1000 + int(now_us) // 1000
            n: int = await self._command("ZCOUNT", OWNER_PREFIX + owner, f"({now_ms}", "+inf")
            return n

        return await self._call("count", op())

    async def compare_and_advance(self, expected: SessionRecord, record: SessionRecord) -> Advance:
        """Joins the steps that reach this point in the same turn of the event loop.

        The first schedules a flush for the next turn; every step before it joins the
        same script call (one round trip, one command to pack and parse). The model
        runner batches steps' model runs the same way, so the steps of one batch arrive
        here together.
        """
        step = [str(expected.offset), expected.token, record.id, *_step_args(record)]
        loop = asyncio.get_running_loop()
        if self._advancing is None:
            self._advancing = []
            loop.call_soon(self._flush_advances)
        future: asyncio.Future[int] = loop.create_future()
        self._advancing.append(
            _Advance([KEY_PREFIX + record.id, OWNER_PREFIX + record.owner], step, future)
        )
        result = await self._call("advance", future)
        return {1: Advance.APPLIED, 0: Advance.MOVED}.get(result, Advance.GONE)

    def _flush_advances(self) -> None:
        steps, self._advancing = self._advancing or [], None
        for start in range(0, len(steps), _ADVANCE_BATCH_MAX):
            task = asyncio.ensure_future(
                self._advance_batch(steps[start : start + _ADVANCE_BATCH_MAX])
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _advance_batch(self, steps: list[_Advance]) -> None:
        keys: list[str] = []
        args: list[Any] = [self._ttl_ms]
        for step in steps:
            keys += step.keys
            args.append(len(step.args))
            args += step.args
        try:
            results = await self._eval(self._advance, keys, args)
        except BaseException as exc:
            for step in steps:
                if not step.future.done():
                    step.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for step, result in zip(steps, results, strict=True):
            if not step.future.done():  # a caller cancelled meanwhile
                step.future.set_result(int(result))

    async def ping(self) -> bool:
        """True when Redis answers; never raises."""
        try:
            return bool(await self._command("PING"))
        except (RedisError, OSError):  # down, timed out, refusing (e.g. a wrong password)
            return False

    async def aclose(self) -> None:
        if self._tasks:  # steps being written: let them finish
            await asyncio.gather(*self._tasks, return_exceptions=True)
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect()
        await self._pool.aclose()
