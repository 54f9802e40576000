"""What one server-held session costs in memory, against the documented bound.

Creates sessions on the shipped sine-lstm, steps each once with N values (the
largest step the limits allow by default is 10,000), and measures:

- Redis: `MEMORY USAGE` of every session key (exact bytes Redis holds for it);
- memory store: the bytes of every record's fields (state, kept answer, ids).

The bound (docs/sessions.md): session_replay_max_bytes + 4 x (num_layers x hidden x 4)
+ a fixed ~1 KiB, whatever the step size. Steps beyond the default limit of 10,000
values are allowed here (max_values_per_series is raised) to show the cap at work.

    .venv/bin/python -m bench.session_memory --values 100 1000 10000 --sessions 50
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import redis
from fastapi.testclient import TestClient

from bench._common import free_port, pick_model
from service.app import create_app
from service.sessions.redis_store import KEY_PREFIX
from service.settings import Settings


def record_bytes(record: object) -> int:
    total = 0
    for name in ("id", "model", "owner", "h", "c"):
        value = getattr(record, name)
        total += len(value) if value is not None else 0
    last = getattr(record, "last_step", None)
    if last is not None:
        total += len(last.digest)
        for blob in (last.answer, last.h_before, last.c_before):
            total += len(blob) if blob is not None else 0
    return total


def measure(store: str, url: str, repo: Path, name: str, n_values: int, sessions: int) -> int:
    settings = Settings(
        model_dir=repo,
        session_store=store,
        redis_url=url,
        access_log=False,
        max_values_per_series=max(n_values, 10_000),
        session_quota_burst=10_000,
    )
    values = np.sin(np.arange(n_values) * 0.1).tolist()
    sizes = []
    with TestClient(create_app(settings)) as c, redis.Redis.from_url(url) as r:
        for _ in range(sessions):
            sid = c.post(f"/v1/models/{name}/sessions").json()["session"]
            step = c.post(f"/v1/sessions/{sid}/observe", json={"values": values, "offset": 0})
            assert step.status_code == 200, step.text
            if store == "redis":
                sizes.append(int(r.memory_usage(KEY_PREFIX + sid, samples=0) or 0))
            else:
                record = c.app_state["seqcast"].sessions.store._records[sid]
                sizes.append(record_bytes(record))
    return max(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=int, nargs="+", default=[1, 100, 10_000, 100_000])
    parser.add_argument("--sessions", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo, name = pick_model(Path(tmp))
        port = free_port()
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            cap = Settings().session_replay_max_bytes
            print(f"model {name}; session_replay_max_bytes={cap}")
            print("| values per step | answer bytes | memory store record | Redis MEMORY USAGE |")
            print("| ---: | ---: | ---: | ---: |")
            for n in args.values:
                mem = measure("memory", url, repo, name, n, args.sessions)
                red = measure("redis", url, repo, name, n, args.sessions)
                print(f"| {n:,} | {(n + 1) * 4:,} | {mem:,} | {red:,} |")
        finally:
            server.terminate()


if __name__ == "__main__":
    main()
