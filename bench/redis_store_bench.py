"""CPU per compare-and-advance in the Redis store: three ways to send it, in one run.

- ``redis-py``: redis-py's asyncio client and its registered script (EVALSHA through
  its command layer), one call per step: how the store sent steps before;
- ``one call per step``: the store's own path (hiredis-packed command on a pooled
  connection), one script call per step;
- ``coalesced``: ``RedisStore.compare_and_advance``, where the steps that arrive in
  one turn of the event loop share one script call.

Each runs ``--steps`` steps on each of ``--concurrency`` sessions at once, this
process pinned to CPU 0 and redis-server (no persistence) to CPU 1, and reports
this process's CPU time per step (robust to other load on the machine) and the
wall time per step.

    .venv/bin/python -m bench.redis_store_bench
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
import uvloop

from bench.sessions_bench import start_redis
from service.sessions.record import AppliedStep, SessionRecord, new_token, pack_state
from service.sessions.redis_store import _ADVANCE_LUA, KEY_PREFIX, OWNER_PREFIX, RedisStore
from service.sessions.redis_store import _step_args as step_args
from service.sessions.store import OwnerQuota

Advance = Callable[[SessionRecord, SessionRecord], Awaitable[object]]


def next_record(record: SessionRecord) -> SessionRecord:
    """What a one-value step of a 1 x 32 LSTM writes."""
    step = AppliedStep(record.offset, "d" * 64, answer=b"\0" * 8)
    return replace(record, offset=record.offset + 1, token=new_token(), last_step=step)


async def measure(
    store: RedisStore, advance: Advance, concurrency: int, steps: int
) -> tuple[float, float]:
    """(CPU µs, wall µs) per step."""
    state = pack_state(np.zeros((1, 32), dtype=np.float32))
    records = [
        SessionRecord(
            id=new_token(),
            model="m",
            version=1,
            offset=0,
            h=state,
            c=state,
            created_at=time.time(),
            updated_at=time.time(),
            token=new_token(),
        )
        for _ in range(concurrency)
    ]
    for r in records:
        await store.create(r, OwnerQuota(max_live=10**6, rate=1e6, burst=10**6))

    async def stream(record: SessionRecord) -> None:
        for _ in range(steps):
            advanced = next_record(record)
            await advance(record, advanced)
            record = advanced

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(stream(r) for r in records))
    n = concurrency * steps
    for r in records:  # every step applied: none lost to the way it was sent
        got = await store.get(r.id)
        assert got is not None
        assert got.offset == steps, got.offset
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


async def main(url: str, args: argparse.Namespace) -> None:
    store = RedisStore(url, ttl_s=600)
    client = aioredis.Redis.from_url(url, protocol=2)
    script = client.register_script(_ADVANCE_LUA)
    ttl = 600_000

    async def via_redis_py(old: SessionRecord, new: SessionRecord) -> object:
        keys = [KEY_PREFIX + new.id, OWNER_PREFIX + new.owner]
        step = [str(old.offset), old.token, new.id, *step_args(new)]
        return await script(keys=keys, args=[ttl, len(step), *step])

    async def one_call(old: SessionRecord, new: SessionRecord) -> object:
        keys = [KEY_PREFIX + new.id, OWNER_PREFIX + new.owner]
        step = [str(old.offset), old.token, new.id, *step_args(new)]
        return await store._eval(store._advance, keys, [ttl, len(step), *step])

    ways: dict[str, Advance] = {
        "redis-py": via_redis_py,
        "one call per step": one_call,
        "coalesced": store.compare_and_advance,
    }
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):  # alternating, so drifting load hits all alike
        for concurrency in args.concurrency:
            for name, advance in ways.items():
                got = await measure(store, advance, concurrency, args.steps)
                results.setdefault((name, concurrency), []).append(got)
    await client.aclose()
    await store.aclose()
    print("| concurrent steps | way | CPU µs per step | wall µs per step |")
    print("| ---: | --- | ---: | ---: |")
    for (name, concurrency), runs in results.items():
        cpu = sorted(r[0] for r in runs)[len(runs) // 2]
        wall = sorted(r[1] for r in runs)[len(runs) // 2]
        print(f"| {concurrency} | {name} | {cpu:.0f} | {wall:.0f} |")


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="steps per session")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3, help="medians over this many")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        url = start_redis(Path(tmp), stack, "none")
        uvloop.run(main(url, args))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
