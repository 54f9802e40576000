"""Session steps under load: many concurrent sessions, each stepped in turn, memory vs Redis.

For each store, a real uvicorn server (one worker, uvloop + httptools, no access
log) runs on loopback pinned to CPU 0; the asyncio load generator (aiohttp) and,
for the Redis store, a redis-server (no persistence) run pinned to CPU 1. The
generator creates ``--sessions`` sessions, then steps all of them at once: each
session sends ``--steps`` observe requests one after another (one value,
horizon 1, the offset it expects), so ``--sessions`` requests are in flight at
any time. It reports steps per second over the stepping phase, p50 / p99 step
latency, the server's resident memory before and after, and checks that every
session ends at offset ``--steps`` with no error.

    .venv/bin/python -m bench.sessions_bench                          # ~1 minute
    .venv/bin/python -m bench.sessions_bench --sessions 100 --steps 5  # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp

from bench._common import ROOT, cpu_seconds, free_port, pick_model, stop

SERVER_CPU, LOAD_CPU = "0", "1"
PHASE_TIMEOUT_S = 300  # a run that takes longer than this is abandoned


def start_redis(workdir: Path, stack: ExitStack) -> str:
    port = free_port()
    argv = [
        "taskset", "-c", LOAD_CPU, "redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", str(workdir),
        "--logfile", str(workdir / "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(stop, proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("redis-server did not start")


def redis_info(url: str) -> dict[str, str]:
    """INFO (memory, cpu, ...) and the key count, over a raw socket (no client needed here)."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"INFO\r\nDBSIZE\r\n")
        data = b""
        while b"\r\n:" not in data or not data.endswith(b"\r\n"):
            data += s.recv(65536)
    text = data.decode()
    info = dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith(":")
    )
    info["keys"] = text.rsplit("\r\n:", 1)[1].strip()
    return info


def start_server(
    repo: Path, store: str, redis_url: str | None, stack: ExitStack
) -> tuple[str, int]:
    port = free_port()
    env = dict(os.environ, SEQCAST_MODEL_DIR=str(repo), SEQCAST_SESSION_STORE=store)
    if redis_url:
        env["SEQCAST_REDIS_URL"] = redis_url
    argv = [
        "taskset", "-c", SERVER_CPU, sys.executable, "-m", "uvicorn", "service.app:create_app",
        "--factory", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        "--backlog", "4096", "--timeout-keep-alive", "75",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, env=env)
    stack.callback(stop, proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            return url, proc.pid
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start within 60 s")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(rest.split()[0])
    return fields


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(url, json=body) as response:
        payload: dict[str, Any] = await response.json()
        if response.status not in (200, 201):
            raise RuntimeError(f"{url}: {response.status} {payload}")
        return payload


async def generate(
    url: str, model: str, sessions: int, steps: int, server_pid: int
) -> dict[str, Any]:
    """Create the sessions, then step them all concurrently; latencies in seconds."""
    connector = aiohttp.TCPConnector(limit=sessions, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        created = await asyncio.gather(
            *(_post(http, f"{url}/v1/models/{model}/sessions", {}) for _ in range(sessions))
        )
        ids = [c["session"] for c in created]
        latencies: list[float] = []

        async def run(session_id: str, seed: int) -> None:
            rng = random.Random(seed)
            endpoint = f"{url}/v1/sessions/{session_id}/observe"
            for offset in range(steps):
                body = {"values": [round(rng.uniform(-1, 1), 4)], "offset": offset}
                t0 = time.perf_counter()
                answer = await _post(http, endpoint, body)
                latencies.append(time.perf_counter() - t0)
                if answer["offset"] != offset + 1:
                    raise RuntimeError(f"session {session_id}: offset {answer['offset']}")

        started, cpu_started = time.perf_counter(), time.process_time()
        server_cpu_started = cpu_seconds(server_pid)
        await asyncio.gather(*(run(s, i) for i, s in enumerate(ids)))
        elapsed = time.perf_counter() - started
        generator_cpu = time.process_time() - cpu_started
        server_cpu = cpu_seconds(server_pid) - server_cpu_started

        # Every session must stand exactly at `steps`: no lost update, no double step.
        async def offset_of(session_id: str) -> int:
            async with http.get(f"{url}/v1/sessions/{session_id}") as response:
                info: dict[str, Any] = await response.json()
                return int(info["offset"])

        offsets = await asyncio.gather(*(offset_of(s) for s in ids))
    wrong = sum(1 for o in offsets if o != steps)
    latencies.sort()
    return {
        "steps": len(latencies),
        "seconds": elapsed,
        "steps_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "mean_ms": 1000 * statistics.fmean(latencies),
        "sessions_at_wrong_offset": wrong,
        # Server CPU per step: other load on the machine disturbs this far less
        # than steps/s (it slows the server down but does not add to its CPU time).
        "server_cpu_us_per_step": 1e6 * server_cpu / len(latencies),
        "server_cpu_share": server_cpu / elapsed,
        # Near 1.0 means the generator, not the server, limited the rate.
        "generator_cpu_share": generator_cpu / elapsed,
    }


def bench_store(
    store: str, repo: Path, name: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    with ExitStack() as stack:
        redis_url = start_redis(workdir, stack) if store == "redis" else None
        url, pid = start_server(repo, store, redis_url, stack)
        # Warm-up on sessions of its own (kept out of the figures).
        asyncio.run(asyncio.wait_for(generate(url, name, 50, 5, pid), PHASE_TIMEOUT_S))
        before = memory_kib(pid)
        redis_before = redis_info(redis_url) if redis_url else {}
        result = asyncio.run(
            asyncio.wait_for(generate(url, name, args.sessions, args.steps, pid), PHASE_TIMEOUT_S)
        )
        after = memory_kib(pid)
        result.update(
            store=store,
            rss_before_mib=before["VmRSS"] / 1024,
            rss_after_mib=after["VmRSS"] / 1024,
            rss_peak_mib=after["VmHWM"] / 1024,
        )
        if redis_url:
            info = redis_info(redis_url)
            result["redis_used_memory"] = info.get("used_memory_human", "?")
            result["redis_keys"] = int(info["keys"])
            # Redis CPU over the measured run (creation, steps, checks) per step.
            cpu = sum(
                float(info[k]) - float(redis_before[k]) for k in ("used_cpu_sys", "used_cpu_user")
            )
            result["redis_cpu_us_per_step"] = 1e6 * cpu / result["steps"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000, help="concurrent sessions")
    parser.add_argument("--steps", type=int, default=20, help="observe steps per session")
    parser.add_argument("--stores", nargs="+", default=["memory", "redis"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if "redis" in args.stores and shutil.which("redis-server") is None:
        parser.error("redis-server is not installed")
    # The generator (this process) and redis-server stay off the server's CPU.
    os.sched_setaffinity(0, {int(LOAD_CPU)})

    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        repo, name = pick_model(workdir)
        for store in args.stores:
            r = bench_store(store, repo, name, args, workdir)
            results.append(r)
            print(
                f"{store:<6} {r['steps_per_s']:7.0f} steps/s  p50 {r['p50_ms']:6.2f} ms  "
                f"p99 {r['p99_ms']:6.2f} ms  RSS {r['rss_before_mib']:.0f} -> "
                f"{r['rss_after_mib']:.0f} MiB",
                flush=True,
            )
            if r["sessions_at_wrong_offset"]:
                raise RuntimeError(f"{store}: sessions at a wrong offset: {r}")
    load_after = os.getloadavg()[0]

    print()
    print(
        f"model {name}; {args.sessions} concurrent sessions x {args.steps} steps; "
        f"load average {load_before:.2f} before, {load_after:.2f} after"
    )
    print(
        "| store | steps/s | p50 ms | p99 ms | server RSS before -> after (peak) "
        "| server CPU µs/step | CPU share server / generator | Redis |"
    )
    print("| --- | ---: | ---: | ---: | --- | ---: | --- | --- |")
    for r in results:
        redis = (
            f"{r['redis_used_memory']}, {r['redis_keys']} keys, "
            f"{r['redis_cpu_us_per_step']:.0f} µs CPU/step"
            if "redis_keys" in r
            else ""
        )
        print(
            f"| {r['store']} | {r['steps_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['rss_before_mib']:.0f} -> {r['rss_after_mib']:.0f} MiB "
            f"({r['rss_peak_mib']:.0f}) | {r['server_cpu_us_per_step']:.0f} | "
            f"{r['server_cpu_share']:.2f} / "
            f"{r['generator_cpu_share']:.2f} | {redis} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
