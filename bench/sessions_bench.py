"""Session steps against predict with state, on the same server in the same run: memory and Redis.

For each store a real uvicorn server (one worker, uvloop + httptools, no access
log) runs on loopback pinned to CPU 0; wrk and, for the Redis store, a
redis-server configured as in docker-compose.yml (AOF, ``appendfsync
everysec``) run pinned to CPU 1. Both servers start first; then every round
runs, on each server in turn, wrk with predict requests (one series of
``--values`` values with a state, the new state returned) and wrk stepping
sessions (``--values`` values per observe, horizon 1), ``--connections``
connections each.

The session load is a per-thread wrk Lua script: the thread holds the sessions
it was given, each with the offset it stands at, in a queue; every request
takes the session at the head, sends the step at its offset and remembers it;
the answer names the session and its new offset, which must be the one sent
plus ``--values``, and puts it back at the tail. So each session has one step in
flight at a time, always at a known offset. After each run the bench reads every
session back and checks that the offsets moved by exactly what wrk saw
answered (plus at most one unanswered step per connection at the end).

Reported per server: requests/s (mean over rounds), p50 and p99 (median over
rounds), server CPU per request, wrk's CPU share of its core (near 1.0 would
mean the generator, not the server, limited the rate), Redis CPU per step, and
session steps/s divided by predict req/s.

    .venv/bin/python -m bench.sessions_bench --sched nice       # as in docs (~3 minutes)
    .venv/bin/python -m bench.sessions_bench --against main --stores redis   # a change
    .venv/bin/python -m bench.sessions_bench --duration 3 --rounds 1   # quick look
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench._common import ROOT, checkout, cpu_seconds, free_port, pick_model, stop
from bench.predict_bench import SCHED

# Put before the server, wrk and redis-server: see SCHED and --sched.
PREFIX: list[str] = []

SERVER_CPU, LOAD_CPU = "0", "1"

# Shared by both wrk scripts: one JSON line with wrk's summary and latency percentiles,
# plus what the session threads counted (zero for predict).
_DONE = """
local threads = {}
function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end
done = function(summary, latency, requests)
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do
    ok = ok + (t:get("ok") or 0)
    bad = bad + (t:get("bad") or 0)
  end
  io.write(string.format('BENCH {"requests": %d, "errors": %d, "non2xx": %d, '
    .. '"seconds": %.3f, "p50_us": %d, "p99_us": %d, "answered": %d, "wrong": %d}\\n',
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, summary.errors.status, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), ok, bad))
end
"""

_PREDICT_LUA = (
    """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("BENCH_BODY_FILE")):read("*a")
"""
    + _DONE
)

# The sessions file has one "id offset" line per session; thread i of n takes lines
# i, i + n, ... Values cycle through a short fixed list, so bodies differ by step.
_SESSIONS_LUA = (
    """
local queue, head, tail = {}, 1, 0
local sent = {}
local step_values = tonumber(os.getenv("BENCH_VALUES"))
local headers = {["Content-Type"] = "application/json"}
ok, bad = 0, 0

function init(args)
  local threads = tonumber(os.getenv("BENCH_THREADS"))
  local n = 0
  for line in io.lines(os.getenv("BENCH_SESSIONS_FILE")) do
    if n % threads == index then
      local id, offset = line:match("^(%S+) (%d+)$")
      tail = tail + 1
      queue[tail] = {id, tonumber(offset)}
    end
    n = n + 1
  end
end

function request()
  local s = queue[head]
  queue[head] = nil
  head = head + 1
  sent[s[1]] = s[2]
  local parts = {}
  for k = 1, step_values do
    parts[k] = string.format("%.2f", ((s[2] + k) % 20) / 10 - 1)
  end
  local body = '{"values":[' .. table.concat(parts, ",") .. '],"offset":' .. s[2] .. '}'
  return wrk.format("POST", "/v1/sessions/" .. s[1] .. "/observe", headers, body)
end

function response(status, hdrs, body)
  local id = body:match('"session":"([^"]+)"')
  local offset = tonumber(body:match('"offset":(%d+)'))
  if status ~= 200 or id == nil or sent[id] == nil then
    bad = bad + 1  -- the session is lost to this run: it counts as wrong
    return
  end
  if offset ~= sent[id] + step_values then bad = bad + 1 end
  ok = ok + 1
  tail = tail + 1
  queue[tail] = {id, offset}
  sent[id] = nil
end
"""
    + _DONE
)


def start_redis(workdir: Path, stack: ExitStack, persistence: str) -> str:
    """A redis-server on CPU 1; "aof" is docker-compose.yml's configuration."""
    port = free_port()
    data = workdir / f"redis-{port}"
    data.mkdir()
    durable = ["--appendonly", "yes", "--appendfsync", "everysec"]
    argv = [
        *PREFIX, "taskset", "-c", LOAD_CPU, "redis-server",
        "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", *(durable if persistence == "aof" else ["--appendonly", "no"]),
        "--maxmemory", "512mb", "--maxmemory-policy", "noeviction",
        "--dir", str(data), "--logfile", str(data / "redis.log"),
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


def redis_info(url: str, section: str) -> dict[str, str]:
    """One INFO section, over a raw socket (no client needed here)."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(f"INFO {section}\r\n".encode())
        data = b""
        while b"\r\n" not in data or len(data.partition(b"\r\n")[2]) < int(
            data[1 : data.index(b"\r\n")]
        ):
            data += s.recv(65536)
    return dict(line.split(":", 1) for line in data.decode().splitlines() if ":" in line)


def redis_cpu_seconds(url: str) -> float:
    """Redis's own CPU time so far."""
    info = redis_info(url, "cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def start_server(
    repo: Path, store: str, redis_url: str | None, stack: ExitStack, source: Path = ROOT
) -> tuple[str, int]:
    """`source`: the checkout whose `service` package runs (an earlier commit for --against)."""
    port = free_port()
    env = dict(os.environ, SEQCAST_MODEL_DIR=str(repo), SEQCAST_SESSION_STORE=store)
    env["PYTHONPATH"] = str(source)
    env["SEQCAST_ACCESS_LOG"] = "false"
    # The bench creates its sessions at once: no create-rate quota in the way.
    env["SEQCAST_SESSION_QUOTA_BURST"] = "1000000"
    env["SEQCAST_SESSION_QUOTA_LIVE"] = "1000000"
    if redis_url:
        env["SEQCAST_REDIS_URL"] = redis_url
    argv = [
        *PREFIX, "taskset", "-c", SERVER_CPU,
        sys.executable, "-m", "uvicorn", "service.app:create_app",
        "--factory", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=source, env=env)
    stack.callback(stop, proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a loaded machine starts slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            return url, proc.pid
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start within 180 s")


def call(url: str, body: dict[str, Any] | None = None, method: str = "POST") -> dict[str, Any]:
    """One request of the bench's own (creates, offset checks); a 503 is tried again."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
    for attempt in range(5):
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or attempt == 4:
                raise
            time.sleep(float(exc.headers.get("Retry-After", "1")))
    raise AssertionError("unreachable")


def predict_body(url: str, name: str, values: int) -> bytes:
    """One series of `values` values with the state a previous call returned."""
    series = [round(((k + 1) % 20) / 10 - 1, 2) for k in range(values)]
    first = call(f"{url}/v1/models/{name}/predict", {"series": [{"values": series}]})
    state = first["series"][0]["state"]
    body = {"series": [{"values": series, "state": state}], "return_state": True}
    return json.dumps(body).encode()


def offsets(url: str, ids: list[str]) -> list[int]:
    return [int(call(f"{url}/v1/sessions/{i}", method="GET")["offset"]) for i in ids]


def wrk(
    url: str, pid: int, path: str, lua: Path, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """One wrk run; requests/s, latency, and server, wrk (and Redis) CPU."""
    cmd = [
        *PREFIX, "taskset", "-c", LOAD_CPU, "wrk", f"-t{args.threads}", f"-c{args.connections}",
        f"-d{args.duration}s", "--timeout", "5s", "-s", str(lua), url + path,
    ]  # fmt: skip
    cpu_before = cpu_seconds(pid)
    redis_before = redis_cpu_seconds(env["REDIS_URL"]) if env.get("REDIS_URL") else 0.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=args.duration + 60, check=True,
        env=dict(os.environ, BENCH_THREADS=str(args.threads), **env),
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk said: {out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(line[len("BENCH ") :])
    seconds = result["seconds"]
    result["rps"] = result["requests"] / seconds
    result["cpu_us_per_request"] = (cpu_seconds(pid) - cpu_before) / result["requests"] * 1e6
    wrk_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    result["generator_cpu_share"] = wrk_cpu / seconds
    if env.get("REDIS_URL"):
        redis_cpu = redis_cpu_seconds(env["REDIS_URL"]) - redis_before
        result["redis_cpu_us_per_request"] = redis_cpu / result["requests"] * 1e6
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per kind")
    parser.add_argument("--rounds", type=int, default=3, help="predict / steps pairs per server")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions stepped in turn")
    parser.add_argument("--values", type=int, default=1, help="values per step and per predict")
    parser.add_argument("--stores", nargs="+", default=["memory", "redis"])
    parser.add_argument(
        "--redis-persistence", choices=["aof", "none"], default="aof",
        help="aof: appendonly yes, appendfsync everysec (docker-compose.yml)",
    )  # fmt: skip
    parser.add_argument(
        "--sched", choices=sorted(SCHED), default="none",
        help="scheduling of server, wrk and Redis (bench/predict_bench.py: SCHED)",
    )  # fmt: skip
    parser.add_argument(
        "--against", metavar="REV", help="also run each store on seqcast as of this git commit"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    PREFIX[:] = SCHED[args.sched]
    if args.sessions < args.connections:
        parser.error("--sessions must be at least --connections (one step in flight each)")
    if "redis" in args.stores and shutil.which("redis-server") is None:
        parser.error("redis-server is not installed")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed")

    results: dict[str, Any] = {"load_before": os.getloadavg()[0], "servers": {}}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        repo, name = pick_model(workdir)
        predict_lua, sessions_lua = workdir / "predict.lua", workdir / "sessions.lua"
        predict_lua.write_text(_PREDICT_LUA)
        sessions_lua.write_text(_SESSIONS_LUA)
        sources = [("", ROOT)]
        if args.against:
            before = checkout(args.against, workdir / "before", stack)
            sources.append((f" @ {args.against}", before))
        servers: dict[str, dict[str, Any]] = {}
        for (suffix, source), store in itertools.product(sources, args.stores):
            label = store + suffix
            redis_url = (
                start_redis(workdir, stack, args.redis_persistence) if store == "redis" else None
            )
            url, pid = start_server(repo, store, redis_url, stack, source)
            body = workdir / f"predict-{len(servers)}.json"
            body.write_bytes(predict_body(url, name, args.values))
            empty = int(redis_info(redis_url, "memory")["used_memory"]) if redis_url else 0
            ids = [
                call(f"{url}/v1/models/{name}/sessions")["session"] for _ in range(args.sessions)
            ]
            env = {"BENCH_BODY_FILE": str(body), "BENCH_VALUES": str(args.values)}
            if redis_url:
                env["REDIS_URL"] = redis_url
            servers[label] = {
                "url": url, "pid": pid, "ids": ids, "env": env, "n": len(servers), "empty": empty,
            }  # fmt: skip

        def run(store: str, kind: str, seconds: int) -> dict[str, Any]:
            s = servers[store]
            if kind == "predict":
                return wrk(
                    s["url"], s["pid"], f"/v1/models/{name}/predict", predict_lua, s["env"],
                    argparse.Namespace(**{**vars(args), "duration": seconds}),
                )  # fmt: skip
            before = offsets(s["url"], s["ids"])
            file = workdir / f"sessions-{s['n']}.txt"
            file.write_text("".join(f"{i} {o}\n" for i, o in zip(s["ids"], before, strict=True)))
            r = wrk(
                s["url"], s["pid"], "/", sessions_lua,
                {**s["env"], "BENCH_SESSIONS_FILE": str(file)},
                argparse.Namespace(**{**vars(args), "duration": seconds}),
            )  # fmt: skip
            after = offsets(s["url"], s["ids"])
            moved = sum(a - b for a, b in zip(after, before, strict=True))
            # Steps answered moved the sessions by exactly that; at the end wrk drops
            # up to one unanswered step per connection, which the server may have applied.
            expected = r["answered"] * args.values
            slack = args.connections * args.values
            if r["wrong"] or not expected <= moved <= expected + slack:
                raise RuntimeError(f"{store}: steps moved {moved} values, wrk saw {expected}: {r}")
            return r

        for store in servers:
            run(store, "predict", args.warmup)
            run(store, "steps", args.warmup)
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            store: {"predict": [], "steps": []} for store in servers
        }
        for _ in range(args.rounds):
            for store in servers:
                for kind in ("predict", "steps"):
                    r = run(store, kind, args.duration)
                    if r["errors"] or r["non2xx"]:
                        raise RuntimeError(f"{store} {kind} had failed requests: {r}")
                    runs[store][kind].append(r)
                    redis = (
                        f"  Redis {r['redis_cpu_us_per_request']:4.0f} us/req"
                        if "redis_cpu_us_per_request" in r
                        else ""
                    )
                    print(
                        f"{store:<16} {kind:<7} {r['rps']:7.0f} req/s  "
                        f"p50 {r['p50_us'] / 1000:6.2f} ms  p99 {r['p99_us'] / 1000:6.2f} ms  "
                        f"server {r['cpu_us_per_request']:4.0f} us/req  "
                        f"wrk CPU {r['generator_cpu_share']:.2f}{redis}",
                        flush=True,
                    )
        results["runs"] = runs
        # Redis's main thread waits when the disk is slow: the AOF write is postponed
        # behind a running fsync (aof_delayed_fsync counts those that reached 2 s).
        results["redis_aof_delayed_fsync"] = {
            label: int(redis_info(s["env"]["REDIS_URL"], "persistence")["aof_delayed_fsync"])
            for label, s in servers.items()
            if "REDIS_URL" in s["env"] and args.redis_persistence == "aof"
        }
        # What Redis holds per session once every session has stepped: its hash, its
        # expiry, its entry in the owner's set (docker-compose.yml's sizing).
        results["redis_bytes_per_session"] = {
            label: (int(redis_info(s["env"]["REDIS_URL"], "memory")["used_memory"]) - s["empty"])
            / len(s["ids"])
            for label, s in servers.items()
            if "REDIS_URL" in s["env"]
        }
    results["load_after"] = os.getloadavg()[0]

    print()
    print(
        f"model {name}; {args.connections} connections, {args.sessions} sessions, "
        f"{args.values} value(s) per request, {args.rounds} x {args.duration} s per kind; "
        f"Redis persistence {args.redis_persistence}; --sched {args.sched}; load average "
        f"{results['load_before']:.2f} before, {results['load_after']:.2f} after"
    )
    print(
        "| store | requests | req/s | p50 ms | p99 ms | server CPU µs/req | wrk CPU share "
        "| Redis CPU µs/req | steps ÷ predict |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for store, kinds in runs.items():
        mean = {k: statistics.mean(r["rps"] for r in rs) for k, rs in kinds.items()}
        for kind, rs in kinds.items():
            p50 = statistics.median(r["p50_us"] for r in rs) / 1000
            p99 = statistics.median(r["p99_us"] for r in rs) / 1000
            cpu = statistics.mean(r["cpu_us_per_request"] for r in rs)
            share = statistics.mean(r["generator_cpu_share"] for r in rs)
            redis = (
                f"{statistics.mean(r['redis_cpu_us_per_request'] for r in rs):.0f}"
                if "redis_cpu_us_per_request" in rs[0]
                else ""
            )
            label = "session steps" if kind == "steps" else "predict with state"
            ratio = f"{mean['steps'] / mean['predict']:.0%}" if kind == "steps" else ""
            print(
                f"| {store} | {label} | {mean[kind]:.0f} | {p50:.2f} | {p99:.2f} | {cpu:.0f} "
                f"| {share:.2f} | {redis} | {ratio} |"
            )
    for label, size in results["redis_bytes_per_session"].items():
        delayed = results["redis_aof_delayed_fsync"].get(label, "-")
        print(
            f"{label}: Redis used_memory {size:,.0f} bytes per session; aof_delayed_fsync {delayed}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
