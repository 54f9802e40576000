"""The session stores on their own: the contract both the memory and the Redis store keep."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import anyio
import numpy as np
import pytest
import redis.asyncio as aioredis

from service.sessions.factory import make_store
from service.sessions.memory import MemoryStore
from service.sessions.record import (
    AppliedStep,
    SessionRecord,
    new_token,
    pack_state,
    step_digest,
    unpack_state,
)
from service.sessions.redis_store import RedisStore
from service.sessions.store import (
    Advance,
    OwnerQuota,
    QuotaExceeded,
    SessionStore,
    StoreFull,
    StoreUnavailable,
)
from service.settings import Settings
from tests.redis_fixture import RedisServer, free_port

pytestmark = pytest.mark.anyio

QUOTA = OwnerQuota(max_live=1000, rate=1000.0, burst=1000)


def make_record(
    *, lstm: bool = True, offset: int = 0, now: float | None = None, owner: str = ""
) -> SessionRecord:
    now = time.time() if now is None else now
    h = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    return SessionRecord(
        id=uuid.uuid4().hex,
        model="sine-lstm",
        version=2,
        offset=offset,
        h=pack_state(h),
        c=pack_state(-h) if lstm else None,
        created_at=now,
        updated_at=now,
        owner=owner,
        token=new_token(),
    )


def advance(record: SessionRecord, **changes: Any) -> SessionRecord:
    """The record a step writes after `record`: the changes and a fresh write token."""
    return replace(record, token=new_token(), **changes)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    built: SessionStore
    if request.param == "memory":
        built = MemoryStore(max_sessions=100, ttl_s=30)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        built = RedisStore(server.url, ttl_s=30)
    try:
        yield built
    finally:
        await built.aclose()


async def test_create_get_round_trips_every_field(store: SessionStore) -> None:
    record = make_record()
    await store.create(record, QUOTA)
    assert await store.get(record.id) == record
    plain = make_record(lstm=False)
    await store.create(plain, QUOTA)
    got = await store.get(plain.id)
    assert got is not None
    assert got.c is None
    assert unpack_state(got.h, (2, 3)).tolist() == unpack_state(plain.h, (2, 3)).tolist()


async def test_get_unknown_is_none_and_delete_reports_existence(store: SessionStore) -> None:
    record = make_record()
    assert await store.get(record.id) is None
    assert await store.delete(record.id, "") is False
    await store.create(record, QUOTA)
    assert await store.delete(record.id, "") is True
    assert await store.get(record.id) is None


async def test_compare_and_advance_applies_only_at_expected_offset(store: SessionStore) -> None:
    record = make_record()
    await store.create(record, QUOTA)
    step = AppliedStep(offset=0, digest="d" * 64, answer=pack_state(np.arange(4.0)))
    advanced = advance(record, offset=3, h=pack_state(np.ones((2, 3))), last_step=step)
    assert await store.compare_and_advance(record, advanced) is Advance.APPLIED
    assert await store.get(record.id) == advanced
    # A second writer that read offset 0 loses and writes nothing.
    stale = advance(record, offset=5, h=pack_state(np.zeros((2, 3))))
    assert await store.compare_and_advance(record, stale) is Advance.MOVED
    assert await store.get(record.id) == advanced
    await store.delete(record.id, "")
    assert await store.compare_and_advance(advanced, advance(advanced)) is Advance.GONE
    assert await store.get(record.id) is None


async def test_compare_and_advance_needs_the_very_write_it_continues(store: SessionStore) -> None:
    """The same offset is not enough: another history can reach it with another state."""
    record = make_record()
    await store.create(record, QUOTA)
    mine = advance(record, offset=1, h=pack_state(np.ones((2, 3))))
    theirs = advance(record, offset=1, h=pack_state(np.zeros((2, 3))))
    assert await store.compare_and_advance(record, theirs) is Advance.APPLIED
    # `mine` was the write this writer remembers (say, before a rollback); the store
    # now holds `theirs` at the same offset, so a step continuing `mine` is refused.
    assert await store.compare_and_advance(mine, advance(mine, offset=2)) is Advance.MOVED
    assert await store.get(record.id) == theirs
    assert await store.compare_and_advance(theirs, advance(theirs, offset=2)) is Advance.APPLIED


async def test_idle_sessions_expire_and_steps_refresh_the_ttl(store: SessionStore) -> None:
    store.ttl_s = 0.4
    idle, busy = make_record(), make_record()
    await store.create(idle, QUOTA)
    await store.create(busy, QUOTA)
    await anyio.sleep(0.25)
    advanced = advance(busy, offset=1, updated_at=time.time())
    assert await store.compare_and_advance(busy, advanced) is Advance.APPLIED
    await anyio.sleep(0.25)
    assert await store.get(idle.id) is None
    got = await store.get(busy.id)
    assert got is not None
    assert got.offset == 1


async def test_memory_store_refuses_new_sessions_when_full_of_live_ones() -> None:
    clock = [1000.0]
    store = MemoryStore(max_sessions=2, ttl_s=10, clock=lambda: clock[0])
    first, second = make_record(now=1000.0), make_record(now=1001.0)
    await store.create(first, QUOTA)
    clock[0] = 1001.0
    await store.create(second, QUOTA)
    with pytest.raises(StoreFull, match="maximum of 2 live sessions"):
        await store.create(make_record(now=1001.0), QUOTA)
    # Once the oldest is past its idle TTL it is swept and the new one fits;
    # the live session is untouched.
    clock[0] = 1010.5
    third = make_record(now=1010.5)
    await store.create(third, QUOTA)
    assert len(store) == 2
    assert await store.get(first.id) is None
    assert await store.get(second.id) == second
    assert await store.get(third.id) == third


async def test_memory_store_keeps_order_by_last_step() -> None:
    clock = [0.0]
    store = MemoryStore(max_sessions=2, ttl_s=10, clock=lambda: clock[0])
    old, new = make_record(now=0.0), make_record(now=1.0)
    await store.create(old, QUOTA)
    await store.create(new, QUOTA)
    clock[0] = 9.0
    # A step on the older session makes it the most recent one.
    advanced = advance(old, offset=1, updated_at=9.0)
    assert await store.compare_and_advance(old, advanced) is Advance.APPLIED
    clock[0] = 11.5
    await store.create(make_record(now=11.5), QUOTA)  # sweeps `new` (idle since 1.0), not `old`
    assert await store.get(new.id) is None
    got = await store.get(old.id)
    assert got is not None
    assert got.offset == 1


async def test_redis_store_unreachable_raises_store_unavailable() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", ttl_s=30, timeout_s=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"^session store unavailable$"):
            await store.get("x")
        with pytest.raises(StoreUnavailable):
            await store.create(make_record(), QUOTA)
        record = make_record()
        with pytest.raises(StoreUnavailable):
            await store.compare_and_advance(record, advance(record))
        assert time.monotonic() - started < 5
        assert await store.ping() is False
    finally:
        await store.aclose()


async def test_redis_store_recovers_when_redis_comes_back(own_redis_server: RedisServer) -> None:
    store = RedisStore(own_redis_server.url, ttl_s=30, timeout_s=0.5)
    try:
        record = make_record()
        await store.create(record, QUOTA)
        own_redis_server.stop()
        with pytest.raises(StoreUnavailable):
            await store.get(record.id)
        with pytest.raises(StoreUnavailable):
            await store.compare_and_advance(record, advance(record, offset=1))
        own_redis_server.start()
        # Same store object, no restart: the pool dials a fresh connection, and the
        # persistent server came back with the session.
        assert await store.get(record.id) == record
        advanced = advance(record, offset=1)
        assert await store.compare_and_advance(record, advanced) is Advance.APPLIED
        assert await store.get(record.id) == advanced
    finally:
        await store.aclose()


async def test_redis_full_under_noeviction_raises_store_unavailable(
    own_redis_server: RedisServer,
) -> None:
    store = RedisStore(own_redis_server.url, ttl_s=30)
    admin = aioredis.Redis.from_url(own_redis_server.url)
    try:
        record = make_record()
        await store.create(record, QUOTA)
        await admin.config_set("maxmemory-policy", "noeviction")
        await admin.config_set("maxmemory", "1")  # below what is already used
        with pytest.raises(StoreUnavailable, match=r"^session store unavailable"):
            await store.create(make_record(), QUOTA)
        with pytest.raises(StoreUnavailable, match=r"^session store unavailable"):
            await store.compare_and_advance(record, advance(record, offset=1))
        assert await store.get(record.id) == record  # reads still work
    finally:
        await admin.aclose()
        await store.aclose()


async def test_redis_store_waits_for_a_connection_when_all_are_busy(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, ttl_s=30, max_connections=3)
    try:
        records = [make_record() for _ in range(60)]
        async with anyio.create_task_group() as tg:
            for r in records:
                tg.start_soon(store.create, r, QUOTA)
        got = []

        async def fetch(r: SessionRecord) -> None:
            got.append(await store.get(r.id))

        async with anyio.create_task_group() as tg:
            for r in records:
                tg.start_soon(fetch, r)
        assert sorted(g.id for g in got if g is not None) == sorted(r.id for r in records)
    finally:
        await store.aclose()


async def test_redis_state_is_binary_float32(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, ttl_s=30)
    try:
        record = make_record()
        await store.create(record, QUOTA)
        raw = aioredis.Redis.from_url(redis_server.url)
        try:
            blob = await raw.hget(f"seqcast:session:{record.id}", "h")
            ttl_ms = await raw.pttl(f"seqcast:session:{record.id}")
        finally:
            await raw.aclose()
        assert blob == record.h
        assert len(blob) == 2 * 3 * 4
        assert 0 < ttl_ms <= 30_000
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (([1.0, 2.0], 1), ([1, 2], 1), True),
        (([1.0, 2.0], 1), ([1.0, 2.0], 2), False),
        (([1.0, 2.0], 1), ([2.0, 1.0], 1), False),
        (([[1.0, 2.0]], 1), ([1.0, 2.0], 1), False),
    ],
)
def test_step_digest(a: tuple[list[object], int], b: tuple[list[object], int], same: bool) -> None:
    da = step_digest(np.asarray(a[0], dtype=np.float64), a[1])
    db = step_digest(np.asarray(b[0], dtype=np.float64), b[1])
    assert (da == db) is same


@pytest.mark.parametrize("shape", [(3,), (5, 1), (2, 3), (1, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_digest_is_the_one_stored_records_hold(
    shape: tuple[int, ...], dtype: type[np.floating]
) -> None:
    """Records already stored (Redis outlives a server version) keep matching their
    retries: the digest is sha256 of repr((shape, horizon)) then the float64 values."""
    values = np.arange(np.prod(shape), dtype=dtype).reshape(shape) / 7
    as_f8 = np.ascontiguousarray(values, dtype="<f8")
    expected = hashlib.sha256(repr((as_f8.shape, 4)).encode() + as_f8.tobytes()).hexdigest()
    assert step_digest(values, 4) == expected
    assert step_digest(values[::-1], 4) != expected or shape[0] == 1  # order matters


def test_unpack_state_rejects_wrong_size() -> None:
    with pytest.raises(ValueError, match="expected 24"):
        unpack_state(b"\x00" * 20, (2, 3))


async def test_make_store_follows_the_settings(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.sessions.factory")
    memory = make_store(Settings(session_ttl_s=5, session_max=7, workers=2))
    assert isinstance(memory, MemoryStore)
    assert (memory.ttl_s, memory.max_sessions) == (5, 7)
    assert "a session lives in one worker process only" in caplog.text
    url = redis_server.url.replace("redis://", "redis://user:secret@")
    remote = make_store(Settings(session_store="redis", redis_url=url, session_ttl_s=9))
    try:
        assert isinstance(remote, RedisStore)
        assert remote.ttl_s == 9
        assert "secret" not in caplog.text
        assert "***@127.0.0.1" in caplog.text
    finally:
        await remote.aclose()
        await memory.aclose()


def owners() -> tuple[str, str]:
    """Two owner names of this test only: the shared Redis keeps every owner's count."""
    run = uuid.uuid4().hex[:8]
    return f"alice-{run}", f"bob-{run}"


async def test_only_the_owner_deletes_and_each_owner_is_counted(store: SessionStore) -> None:
    alice, bob = owners()
    mine, theirs = make_record(owner=alice), make_record(owner=bob)
    await store.create(mine, QUOTA)
    await store.create(theirs, QUOTA)
    assert (await store.get(mine.id)) == mine  # the owner is stored with the session
    assert await store.delete(mine.id, bob) is False
    assert await store.get(mine.id) == mine
    assert (await store.live_sessions(alice), await store.live_sessions(bob)) == (1, 1)
    assert await store.delete(mine.id, alice) is True
    assert (await store.live_sessions(alice), await store.live_sessions(bob)) == (0, 1)


async def test_live_quota_per_owner(store: SessionStore) -> None:
    alice, bob = owners()
    quota = OwnerQuota(max_live=2, rate=1000.0, burst=1000)
    first = make_record(owner=alice)
    await store.create(first, quota)
    await store.create(make_record(owner=alice), quota)
    with pytest.raises(QuotaExceeded, match="quota of 2 live sessions") as caught:
        await store.create(make_record(owner=alice), quota)
    assert caught.value.retry_after_s > 0
    await store.create(make_record(owner=bob), quota)  # another owner is not held back
    assert await store.delete(first.id, alice)
    await store.create(make_record(owner=alice), quota)  # room again


async def test_create_rate_per_owner(store: SessionStore) -> None:
    alice, bob = owners()
    quota = OwnerQuota(max_live=1000, rate=2.0, burst=3)
    for _ in range(3):
        await store.create(make_record(owner=alice), quota)
    with pytest.raises(QuotaExceeded, match="faster than its quota") as caught:
        await store.create(make_record(owner=alice), quota)
    assert 0 < caught.value.retry_after_s <= 0.5 + 1e-3
    await store.create(make_record(owner=bob), quota)
    await anyio.sleep(0.6)  # one token back at 2/s
    await store.create(make_record(owner=alice), quota)
