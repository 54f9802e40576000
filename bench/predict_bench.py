"""Predict throughput and latency: seqcast against a plain FastAPI + ONNX Runtime baseline,
and against an earlier seqcast commit.

The servers run as real uvicorn processes on loopback with the same options (one
worker, uvloop + httptools, no access log) pinned to CPU 0; wrk runs pinned to CPU 1.
Every request is one series of 20 values with a state, answered with the new state.
Runs alternate between the servers (seqcast / [before] / [variant] / baseline, each round
starting with the next one) so drifting machine load hits all alike; the table reports the
mean requests/s and the median of p50 and p99, and seqcast's rate divided by each other
server's.

    .venv/bin/python -m bench.predict_bench --duration 12 --warmup 2 --rounds 2  # as in docs
    .venv/bin/python -m bench.predict_bench --against b910520 --api-key   # a change, keys on
    .venv/bin/python -m bench.predict_bench --sched fifo    # a machine loaded by other work
    .venv/bin/python -m bench.predict_bench --variant SEQCAST_METRICS=false  # same code, a setting
    .venv/bin/python -m bench.predict_bench --duration 5 --rounds 1   # quick look
    .venv/bin/python -m bench.predict_bench --serve --against 85b8e62   # as `seqcast serve`
    .venv/bin/python -m bench.predict_bench --oip 20 1000 --no-baseline --concurrency 16
    .venv/bin/python -m bench.predict_bench --restart --variant SEQCAST_METRICS=false

`--restart`: every measured run gets a server process of its own, started afresh (and
warmed up) just before it. One process keeps its memory layout (address-space
randomization, hash seed, where ONNX Runtime's buffers land) for all its runs, and on
this machine that alone moved the rate of one configuration by up to ±5 % between
processes, more than some changes measured here: with fresh processes a ratio averages
over layouts as well as over time (docs/benchmarks.md).

`--oip N ...`: on the same seqcast server, beside /v1 predict of the same N values (and
state), the Open Inference Protocol's /v2 infer with binary tensors and with JSON
tensors, as tritonclient sends them; the table adds each /v2 rate divided by /v1's, and
the time service.oip.tensors.decode takes for each body in this process.

On a machine shared with other work, use `--sched fifo` (root): see SCHED below.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench._common import ROOT, checkout, cpu_seconds, free_port, pick_model, stop

# How servers and wrk are scheduled. On a shared machine CFS splits a core between
# process groups, so a server with more runnable threads (the baseline's thread pool)
# wins CPU from other work that a single-threaded one does not; "fifo" (SCHED_FIFO,
# needs root; Linux still keeps 5% of each core for everything else) gives both servers
# their core, "nice" only lowers niceness, "none" changes nothing.
SCHED = {"fifo": ["chrt", "-f", "10"], "nice": ["nice", "-n", "-10"], "none": []}
PREFIX: list[str] = []

# Sent by every request to every server (a server without keys ignores it): equal bytes.
BENCH_KEY = "bench-key-" + "k" * 32

_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer BENCH_KEY"
EXTRA_HEADERS
wrk.body = io.open(os.getenv("BENCH_BODY_FILE"), "rb"):read("*a")
done = function(summary, latency, requests)
  io.write(string.format('BENCH {"requests": %d, "errors": %d, "non2xx": %d, '
    .. '"seconds": %.3f, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, summary.errors.status, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99)))
end
"""


def start(
    kind: str,
    repo: Path,
    name: str,
    port: int,
    stack: ExitStack,
    *,
    source: Path = ROOT,
    keys: bool = False,
    serve: bool = False,
    extra_env: dict[str, str] | None = None,
) -> tuple[str, int]:
    """Start one server on CPU 0 and wait until it answers; returns its base URL and pid.

    `source`: the checkout whose `service` package runs (an earlier commit for "before").
    `serve`: start seqcast by `seqcast serve` (its own server and settings), not uvicorn.
    """
    version_dir = max((repo / name).iterdir(), key=lambda p: int(p.name))
    env = dict(os.environ, SEQCAST_MODEL_DIR=str(repo), BASELINE_MODEL=str(version_dir))
    env["PYTHONPATH"] = str(source)
    env["SEQCAST_ACCESS_LOG"] = "false"  # as --no-access-log below: no access log anywhere
    if keys:
        env["SEQCAST_API_KEYS"] = f"bench:{BENCH_KEY}"
    env.update(extra_env or {})
    target = "bench.baseline_app:create_app" if kind == "baseline" else "service.app:create_app"
    cmd = [
        *PREFIX, "taskset", "-c", "0", sys.executable, "-m", "uvicorn", target, "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    if serve and kind != "baseline":
        # seqcast's own server (its HTTP protocol and settings), as deployed.
        cmd = [
            *PREFIX, "taskset", "-c", "0", sys.executable, "-m", "service.cli", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=source, env=env)
    stack.callback(stop, proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(
                f"{url}/docs" if kind == "baseline" else f"{url}/healthz", timeout=1
            )
            return url, proc.pid
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{kind} server did not start within 60 s")


def request_body(url: str, name: str, n: int = 20) -> bytes:
    """One series of `n` values with the state a previous call returned."""
    values = [round(0.5 + 0.8 * ((i * 7) % 10) / 10, 3) for i in range(n)]
    first = json.dumps({"series": [{"values": values}]}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {BENCH_KEY}"}
    req = urllib.request.Request(f"{url}/v1/models/{name}/predict", first, headers)
    with urllib.request.urlopen(req, timeout=10) as response:
        state = json.loads(response.read())["series"][0]["state"]
    return json.dumps(
        {"series": [{"values": values, "state": state}], "return_state": True}
    ).encode()


def lua_script(headers: dict[str, str] | None = None) -> str:
    """The wrk script: POST the body file with the bench key and these headers."""
    extra = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items())
    return _LUA.replace("BENCH_KEY", BENCH_KEY).replace("EXTRA_HEADERS", extra)


def oip_bodies(v1_body: bytes) -> dict[str, tuple[bytes, dict[str, str]]]:
    """/v2 infer bodies with the values and state of a /v1 predict body, as tritonclient
    sends them (outputs forecast, h, c): binary tensors, and JSON tensors."""
    import numpy as np

    series = json.loads(v1_body)["series"][0]
    values = np.array(series["values"], np.float32)[None]  # (1, T)
    inputs = {"values": values, "h": np.array([series["state"]["h"]], np.float32)}
    if "c" in series["state"]:
        inputs["c"] = np.array([series["state"]["c"]], np.float32)
    names = ["forecast", "h", *(["c"] if "c" in inputs else [])]

    def describe(name: str, array: Any, binary: bool) -> dict[str, Any]:
        tensor: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": "FP32"}
        if binary:
            tensor["parameters"] = {"binary_data_size": array.nbytes}
        else:
            tensor["data"] = array.ravel().tolist()
        return tensor

    bodies = {}
    for binary in (True, False):
        header = {
            "inputs": [describe(n, a, binary) for n, a in inputs.items()],
            "outputs": [{"name": n, "parameters": {"binary_data": binary}} for n in names],
        }
        raw = json.dumps(header, separators=(",", ":")).encode()
        if binary:
            body = raw + b"".join(a.tobytes() for a in inputs.values())
            headers = {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(raw)),
            }
            bodies["v2-binary"] = (body, headers)
        else:
            bodies["v2-json"] = (raw, {})
    return bodies


def decode_us(body: bytes, headers: dict[str, str]) -> float:
    """Microseconds service.oip.tensors.decode takes for this body here (best of 5)."""
    import timeit

    from service.oip.tensors import decode

    length = headers.get("Inference-Header-Content-Length")
    header = length.encode() if length is not None else None
    timer = timeit.Timer(lambda: decode(body, header))
    number, _ = timer.autorange()
    return min(timer.repeat(5, number)) / number * 1e6


def wrk(
    url: str, pid: int, path: str, connections: int, seconds: int, lua: Path, body: Path
) -> dict[str, Any]:
    """One wrk run against one server; requests/s, latency and server CPU per request."""
    cmd = [
        *PREFIX, "taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
        "--timeout", "5s", "-s", str(lua), f"{url}{path}",
    ]  # fmt: skip
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=seconds + 30, check=True,
        env=dict(os.environ, BENCH_BODY_FILE=str(body)),
    )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith("BENCH "))
    result: dict[str, Any] = json.loads(line[len("BENCH ") :])
    result["rps"] = result["requests"] / result["seconds"]
    answered = max(1, result["requests"])  # a warm-up on a starved machine may see none
    result["cpu_us_per_request"] = (cpu_seconds(pid) - cpu_before) / answered * 1e6
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=12, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server")
    parser.add_argument("--rounds", type=int, default=2, help="A/B pairs per concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--sched", choices=sorted(SCHED), default="none", help="see SCHED")
    parser.add_argument(
        "--against", metavar="REV", help="also run seqcast as of this git commit ('before')"
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        metavar="NAME=VALUE",
        help="also run this seqcast with these environment settings ('variant')",
    )
    parser.add_argument("--api-key", action="store_true", help="run this seqcast with API keys on")
    parser.add_argument("--no-baseline", action="store_true", help="leave the baseline out")
    parser.add_argument(
        "--serve", action="store_true", help="start seqcast by `seqcast serve`, not uvicorn"
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="a fresh server process (warmed up) for every measured run; not with --oip",
    )
    parser.add_argument(
        "--oip",
        type=int,
        nargs="+",
        metavar="N",
        help="also /v2 infer (binary, JSON) beside /v1 predict of N values, same server",
    )
    args = parser.parse_args()
    if args.restart and args.oip:
        parser.error("--restart does not go with --oip (its runs share one server)")
    PREFIX[:] = SCHED[args.sched]

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        repo, name = pick_model(workdir)
        lua = workdir / "post.lua"
        lua.write_text(lua_script())
        # How each server starts: (kind, keyword arguments of `start`).
        how: dict[str, tuple[str, dict[str, Any]]] = {
            "seqcast": ("seqcast", {"keys": args.api_key, "serve": args.serve})
        }
        if args.against:
            before = checkout(args.against, workdir / "before", stack)
            how["before"] = ("before", {"source": before, "serve": args.serve})
        if args.variant:
            extra = dict(item.split("=", 1) for item in args.variant)
            how["variant"] = (
                "variant",
                {"keys": args.api_key, "extra_env": extra, "serve": args.serve},
            )
        if not args.no_baseline:
            how["baseline"] = ("baseline", {})

        def launch(kind: str, within: ExitStack) -> tuple[str, int]:
            server, options = how[kind]
            return start(server, repo, name, free_port(), within, **options)

        first = stack.enter_context(ExitStack())  # closed at once with --restart
        servers = {kind: launch(kind, first) for kind in how}
        body = workdir / "body.json"
        body.write_bytes(request_body(servers["seqcast"][0], name))
        predict = f"/v1/models/{name}/predict"
        # What each run hits: kind -> (url, server pid, path, wrk script, body file).
        targets = {kind: (url, pid, predict, lua, body) for kind, (url, pid) in servers.items()}
        # The /v1 run each /v2 run is divided by (the same values on the same server).
        oip_base: dict[str, str] = {}
        decode_times: dict[str, float] = {}
        url, pid = servers["seqcast"]
        for n in args.oip or []:
            v1_body = request_body(url, name, n)
            v1 = "seqcast" if n == 20 else f"v1/{n}"
            if v1 != "seqcast":
                (workdir / f"v1-{n}.json").write_bytes(v1_body)
                targets[v1] = (url, pid, predict, lua, workdir / f"v1-{n}.json")
            for kind, (oip_body, headers) in oip_bodies(v1_body).items():
                label = f"{kind}/{n}"
                (workdir / f"{kind}-{n}.body").write_bytes(oip_body)
                (workdir / f"{kind}-{n}.lua").write_text(lua_script(headers))
                path = f"/v2/models/{name}/infer"
                targets[label] = (
                    url, pid, path, workdir / f"{kind}-{n}.lua", workdir / f"{kind}-{n}.body"
                )  # fmt: skip
                oip_base[label] = v1
                decode_times[label] = decode_us(oip_body, headers)
        load = os.getloadavg()[0]
        results: dict[str, Any] = {"model": name, "load_before": load, "runs": {}}
        results["sched"] = {k: os.sched_getscheduler(pid) for k, (_, pid) in servers.items()}
        results["decode_us"] = decode_times
        if args.restart:  # each run starts its own
            first.close()
        for connections in args.concurrency:
            if not args.restart:
                for url, pid, path, script, data in targets.values():
                    wrk(url, pid, path, connections, args.warmup, script, data)
            runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in targets}
            order = list(targets)
            for round_ in range(args.rounds):
                # Each round starts with the next target, so none always runs first.
                shift = round_ % len(order)
                for kind in order[shift:] + order[:shift]:
                    url, pid, path, script, data = targets[kind]
                    with ExitStack() as fresh:
                        if args.restart:
                            url, pid = launch(kind, fresh)
                            wrk(url, pid, path, connections, args.warmup, script, data)
                        r = wrk(url, pid, path, connections, args.duration, script, data)
                    if r["errors"] or r["non2xx"]:
                        raise RuntimeError(f"{kind} had failed requests: {r}")
                    runs[kind].append(r)
                    print(
                        f"c={connections:<3} {kind:<9} {r['rps']:8.0f} req/s  "
                        f"p50 {r['p50_us'] / 1000:6.2f} ms  p99 {r['p99_us'] / 1000:6.2f} ms  "
                        f"CPU {r['cpu_us_per_request']:5.0f} us/request",
                        flush=True,
                    )
            results["runs"][connections] = runs
        results["load_after"] = os.getloadavg()[0]

    print()
    print(f"--sched {args.sched}: server scheduling policy {results['sched']} (1 = FIFO)")
    if args.against:
        print(f"before = seqcast at {args.against}; seqcast API keys: {args.api_key}")
    if args.variant:
        print(f"variant = this seqcast with {' '.join(args.variant)}; API keys: {args.api_key}")
    if args.restart:
        print("--restart: a fresh server process for every measured run")
    if args.oip:
        print("v2-*/N: /v2 infer of N values on the seqcast server; v1/N: /v1 predict of them "
              "(N = 20 is the seqcast row)")  # fmt: skip
    print(f"model {results['model']}; load average {results['load_before']:.2f} before, "
          f"{results['load_after']:.2f} after")  # fmt: skip
    oip_column = " /v2 ÷ /v1, same values |" if args.oip else ""
    print(
        "| concurrency | server | requests/s | p50 ms | p99 ms | CPU µs/request "
        "| seqcast ÷ this (req/s) |" + oip_column
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if args.oip else ""))
    for connections, runs in results["runs"].items():
        mean = {k: statistics.mean(r["rps"] for r in v) for k, v in runs.items()}
        for kind, rs in runs.items():
            p50 = statistics.median(r["p50_us"] for r in rs) / 1000
            p99 = statistics.median(r["p99_us"] for r in rs) / 1000
            cpu = statistics.mean(r["cpu_us_per_request"] for r in rs)
            ratio = f"{mean['seqcast'] / mean[kind]:.2f}x" if kind != "seqcast" else ""
            row = f"| {connections} | {kind} | {mean[kind]:.0f} | {p50:.2f} | {p99:.2f} "
            row += f"| {cpu:.0f} | {ratio} |"
            if args.oip:
                base = oip_base.get(kind)
                row += f" {mean[kind] / mean[base]:.2f}x |" if base else " |"
            print(row)
    for connections, runs in results["runs"].items():
        for kind, base in oip_base.items():
            # Rounds run each target once, one after the other: a ratio per round shares
            # the machine's load of that moment, and their median resists a noisy round.
            ratios = [a["rps"] / b["rps"] for a, b in zip(runs[kind], runs[base], strict=True)]
            shown = ", ".join(f"{r:.2f}" for r in ratios)
            print(
                f"c={connections} {kind} ÷ {base}: per round {shown}; "
                f"median {statistics.median(ratios):.2f}x"
            )
    for label, micros in decode_times.items():
        print(f"decode {label}: {micros:.1f} µs (service.oip.tensors.decode, in this process)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
