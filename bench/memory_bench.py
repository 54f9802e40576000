"""Memory and small-request latency under maximum-size predict requests.

For each variant (a set of SEQCAST_ settings, or seqcast as of an earlier commit), a
real `seqcast serve` process serves the shipped sine-lstm (models/sine-lstm, an LSTM
of 32 hidden units; a tiny LSTM exported here when it is absent). The bench then

1. measures small-request latency on an idle server (one series of 20 values, with a
   state, sent back to back on one connection);
2. sends `--copies` concurrent copies of the largest request the default limits allow
   (256 series x 10,000 values, horizon 512: a 5.1 MB body) while the small requests
   go on, and records their latency during that time;
3. waits `--settle` seconds once the large ones are answered.

It reports the server's RSS when idle (after a warm-up), its peak (VmHWM, exact) and
its settled RSS (after step 3), read from /proc; the large requests' status and time;
and small-request p50/p99/max, idle and under load. The acceptance line checks
settled <= idle + 300 MiB.

    .venv/bin/python -m bench.memory_bench                       # the defaults
    .venv/bin/python -m bench.memory_bench --variants default no-chunks arena-off \\
        --against 85b8e62                                        # as in docs/operations.md

Variants run one after another (one server at a time, so they do not share memory or
CPU); run them in one invocation to compare them under the same machine load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench._common import ROOT, checkout, free_port, pick_model, stop

# Named SEQCAST_ settings to compare (docs/operations.md: how the defaults were chosen).
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    # One ONNX Runtime run over the whole sequence, as before chunking.
    "no-chunks": {"SEQCAST_CHUNK_STEPS": str(10**9)},
    "arena-off": {"SEQCAST_ORT_CPU_ARENA": "false"},
    "arena-off-no-chunks": {"SEQCAST_ORT_CPU_ARENA": "false", "SEQCAST_CHUNK_STEPS": str(10**9)},
    # As many thread-pool runs as requests: large runs compete with the event loop.
    "pool-3": {"SEQCAST_POOL_RUNS": "3"},
    # glibc's adaptive malloc thresholds (service.malloc not applied).
    "malloc-adaptive": {"SEQCAST_FIXED_MALLOC_THRESHOLDS": "false"},
}
MIB = 1024 * 1024


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_mib(pid: int) -> float:
    return status_kib(pid, "VmRSS") / 1024


def big_body(series: int, values: int, horizon: int) -> bytes:
    """The largest request: `series` sines of `values` values in whole numbers 0-8.

    One digit per value keeps the maximum request (5.1 MB) under the default
    max_body_bytes (8 MiB), which values with decimals would not be.
    """
    rows = [[round(4 + 4 * math.sin(0.07 * t + 0.1 * s)) for t in range(values)]
            for s in range(series)]  # fmt: skip
    body = {"series": [{"values": r, "horizon": horizon} for r in rows]}
    return json.dumps(body, separators=(",", ":")).encode()


def small_body(url: str, name: str) -> bytes:
    """One series of 20 values with the state a previous call returned (as predict_bench)."""
    values = [round(0.5 + 0.8 * ((i * 7) % 10) / 10, 3) for i in range(20)]
    first = httpx.post(f"{url}/v1/models/{name}/predict", json={"series": [{"values": values}]})
    state = first.json()["series"][0]["state"]
    return json.dumps({"series": [{"values": values, "state": state}]}).encode()


def start_server(source: Path, repo: Path, env_extra: dict[str, str], stack: ExitStack) -> Any:
    """`seqcast serve` from `source` (this checkout or an earlier commit's worktree)."""
    port = free_port()
    env = dict(os.environ, SEQCAST_MODEL_DIR=str(repo), PYTHONPATH=str(source))
    env.update(SEQCAST_ACCESS_LOG="false", SEQCAST_LOG_LEVEL="warning", **env_extra)
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=source, env=env)
    stack.callback(stop, proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"{url}/readyz", timeout=1)
            return url, proc
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start within 60 s") from None
            time.sleep(0.2)


class SmallRequests(threading.Thread):
    """Small predict requests back to back on one connection; latencies in seconds."""

    def __init__(self, url: str, name: str, body: bytes) -> None:
        super().__init__(daemon=True)
        self.url = f"{url}/v1/models/{name}/predict"
        self.body = body
        self.stop = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (sent at, latency)
        self.failures = 0

    def run(self) -> None:
        headers = {"content-type": "application/json"}
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                sent = time.perf_counter()
                response = client.post(self.url, content=self.body, headers=headers)
                took = time.perf_counter() - sent
                if response.status_code != 200:
                    self.failures += 1
                self.samples.append((sent, took))

    def between(self, start: float, end: float) -> list[float]:
        return [took for sent, took in self.samples if start <= sent <= end]


def quantiles(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {"n": len(latencies), "p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "n": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": cuts[98] * 1000,
        "max_ms": max(latencies) * 1000,
    }


def measure(
    url: str, proc: Any, name: str, big: bytes, copies: int, settle: float
) -> dict[str, Any]:
    pid = proc.pid
    small = SmallRequests(url, name, small_body(url, name))
    small.start()
    time.sleep(3)  # warm-up, then the idle baseline
    idle_start = time.perf_counter()
    time.sleep(3)
    idle_end = time.perf_counter()
    idle_rss = rss_mib(pid)
    sampled_peak = idle_rss
    results: list[dict[str, Any]] = [{} for _ in range(copies)]

    def send(i: int) -> None:
        started = time.perf_counter()
        try:
            response = httpx.post(
                f"{url}/v1/models/{name}/predict",
                content=big,
                headers={"content-type": "application/json"},
                timeout=600,
            )
            results[i] = {"status": response.status_code, "s": time.perf_counter() - started}
        except httpx.HTTPError as exc:
            results[i] = {"status": repr(exc), "s": time.perf_counter() - started}

    threads = [threading.Thread(target=send, args=(i,)) for i in range(copies)]
    load_start = time.perf_counter()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        sampled_peak = max(sampled_peak, rss_mib(pid))
        time.sleep(0.02)
    load_end = time.perf_counter()
    time.sleep(settle)
    small.stop.set()
    small.join()
    settled_rss = rss_mib(pid)
    return {
        "idle_mib": idle_rss,
        "peak_mib": max(status_kib(pid, "VmHWM") / 1024, sampled_peak),
        "settled_mib": settled_rss,
        "large": results,
        "load_s": load_end - load_start,
        "small_idle": quantiles(small.between(idle_start, idle_end)),
        "small_loaded": quantiles(small.between(load_start, load_end)),
        "small_failures": small.failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS))
    parser.add_argument("--against", metavar="REV", help="also run seqcast as of this commit")
    parser.add_argument("--copies", type=int, default=3, help="concurrent large requests")
    parser.add_argument("--series", type=int, default=256)
    parser.add_argument("--values", type=int, default=10_000)
    parser.add_argument("--horizon", type=int, default=512)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the load")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    big = big_body(args.series, args.values, args.horizon)
    results: dict[str, Any] = {
        "body_mb": len(big) / 1e6,
        "load_before": os.getloadavg()[0],
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as outer:
        workdir = Path(tmp)
        repo, name = pick_model(workdir)
        runs: list[tuple[str, Path, dict[str, str]]] = []
        for v in args.variants:
            repeat = sum(1 for label, _, _ in runs if label.split(" #")[0] == v)
            runs.append((f"{v} #{repeat + 1}" if repeat else v, ROOT, VARIANTS[v]))
        if args.against:
            before = checkout(args.against, workdir / "before", outer)
            runs.append((f"before ({args.against})", before, {}))
        for label, source, env in runs:
            with ExitStack() as stack:
                url, proc = start_server(source, repo, env, stack)
                r = measure(url, proc, name, big, args.copies, args.settle)
            results["runs"][label] = r
            statuses = ", ".join(f"{x['status']} in {x['s']:.1f} s" for x in r["large"])
            print(
                f"{label}: idle {r['idle_mib']:.0f} MiB, peak {r['peak_mib']:.0f}, settled "
                f"{r['settled_mib']:.0f}; large: {statuses}; small p99 idle "
                f"{r['small_idle']['p99_ms']:.1f} ms, under load {r['small_loaded']['p99_ms']:.1f}",
                flush=True,
            )
    results["load_after"] = os.getloadavg()[0]

    print()
    print(
        f"model {name}; {args.copies} concurrent requests of {args.series} x {args.values} "
        f"values, horizon {args.horizon} ({results['body_mb']:.1f} MB each); load average "
        f"{results['load_before']:.2f} before, {results['load_after']:.2f} after"
    )
    print(
        "| variant | idle MiB | peak MiB | settled MiB | settled - idle | large requests "
        "| small p50 / p99 / max ms, idle | small p50 / p99 / max ms, under load (n) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for label, r in results["runs"].items():
        large = ", ".join(
            f"{x['status']} {x['s']:.1f} s" for x in sorted(r["large"], key=lambda x: x["s"])
        )
        i, lo = r["small_idle"], r["small_loaded"]
        print(
            f"| {label} | {r['idle_mib']:.0f} | {r['peak_mib']:.0f} | {r['settled_mib']:.0f} "
            f"| {r['settled_mib'] - r['idle_mib']:+.0f} | {large} "
            f"| {i['p50_ms']:.1f} / {i['p99_ms']:.1f} / {i['max_ms']:.1f} "
            f"| {lo['p50_ms']:.1f} / {lo['p99_ms']:.1f} / {lo['max_ms']:.1f} ({lo['n']}) |"
        )
    ok = True
    for label, r in results["runs"].items():
        if label.startswith("before"):
            continue
        passed = r["settled_mib"] <= r["idle_mib"] + 300 and r["small_failures"] == 0
        ok &= passed
        print(f"{label}: settled <= idle + 300 MiB: {'yes' if passed else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
