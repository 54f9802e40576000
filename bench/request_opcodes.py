"""Python bytecodes one predict request executes in the service, for two sets of settings.

A count, not a timing: the ASGI app is called in this process (no sockets), 16 requests
at a time as 16 connections would send them (they share a batch), each one series of
20 values with a state, answered with the new state, as bench/predict_bench.py sends.
The interpreter's trace hook counts every bytecode executed per function while
`--requests` of them run, after a warm-up; the two apps are built from the same
checkout with the settings given. The count does not move with the machine's load, so
it shows what a change to the request path costs in the service's own Python where a
throughput ratio on a shared machine is within its noise; time spent in C (ONNX
Runtime, JSON, the HTTP server) is not counted.

    .venv/bin/python -m bench.request_opcodes                     # metrics on against off
    .venv/bin/python -m bench.request_opcodes --b SEQCAST_ACCESS_LOG=true --top 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Any
from unittest import mock

from bench._common import ROOT, pick_model

Receive = Callable[[], Awaitable[Any]]
ASGI = Callable[[dict[str, Any], Receive, Callable[[Any], Awaitable[None]]], Any]
BATCH = 16  # requests sent together, as 16 connections would


def settings_env(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


async def start(repo: Path, env: dict[str, str]) -> tuple[ASGI, dict[str, Any]]:
    """The app and its lifespan state, built with these SEQCAST_ settings."""
    sys.path.insert(0, str(ROOT))
    from service.app import create_app
    from service.settings import Settings

    full = {"SEQCAST_MODEL_DIR": str(repo), "SEQCAST_ACCESS_LOG": "false", **env}
    with mock.patch.dict(os.environ, full):
        app = create_app(Settings())
    state: dict[str, Any] = {}
    started = asyncio.Event()
    messages: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await messages.put({"type": "lifespan.startup"})

    async def send(message: Any) -> None:
        started.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    asyncio.get_running_loop().create_task(app(scope, messages.get, send))
    await started.wait()
    return app, state


async def predict(app: ASGI, state: dict[str, Any], path: str, body: bytes) -> bytes:
    """One request through the whole app; its answer's body."""
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": headers, "client": ("127.0.0.1", 5),
        "server": ("127.0.0.1", 8000), "state": dict(state),
    }  # fmt: skip
    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"predict answered {sent[0]['status']}: {sent[1:]}")
    return b"".join(m.get("body", b"") for m in sent[1:])


async def count(
    app: ASGI, state: dict[str, Any], path: str, body: bytes, requests: int
) -> Counter[str]:
    """Bytecodes executed per function while `requests` predicts run, BATCH at a time."""
    counts: Counter[str] = Counter()

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            counts[frame.f_code.co_qualname] += 1
        return trace

    async def rounds(n: int) -> None:
        for _ in range(n):
            await asyncio.gather(*(predict(app, state, path, body) for _ in range(BATCH)))

    await rounds(50)  # warm-up: every lazy path taken once
    sys.settrace(trace)
    try:
        await rounds(max(1, requests // BATCH))
    finally:
        sys.settrace(None)
    return counts


async def two_apps(
    tmp: Path, args: argparse.Namespace
) -> tuple[str, str, dict[str, tuple[ASGI, dict[str, Any]]], bytes]:
    """The model picked, its predict path, apps "a" and "b" built with `args.a` and
    `args.b`, and the request body both are sent: 20 values with the state a first
    call returned, asking for the new state."""
    repo, name = pick_model(tmp)
    path = f"/v1/models/{name}/predict"
    apps = {
        "a": await start(repo, settings_env(args.a)),
        "b": await start(repo, settings_env(args.b)),
    }
    values = [round(0.5 + 0.8 * ((i * 7) % 10) / 10, 3) for i in range(20)]
    first = json.loads(
        await predict(*apps["a"], path, json.dumps({"series": [{"values": values}]}).encode())
    )
    body = json.dumps(
        {
            "series": [{"values": values, "state": first["series"][0]["state"]}],
            "return_state": True,
        }
    ).encode()
    return name, path, apps, body


def settings_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with --a and --b: the two apps' settings (b defaults to metrics off)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--a", nargs="*", default=[], metavar="NAME=VALUE", help="app a settings")
    parser.add_argument(
        "--b",
        nargs="*",
        default=["SEQCAST_METRICS=false"],
        metavar="NAME=VALUE",
        help="app b settings (default: SEQCAST_METRICS=false)",
    )
    return parser


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        name, path, apps, body = await two_apps(Path(tmp), args)
        n = max(1, args.requests // BATCH) * BATCH
        counted = {k: await count(*app, path, body, args.requests) for k, app in apps.items()}
    a, b = counted["a"], counted["b"]
    total_a, total_b = sum(a.values()) / n, sum(b.values()) / n
    print(f"a = {' '.join(args.a) or 'defaults'}; b = {' '.join(args.b) or 'defaults'}")
    print(f"{n} requests, {BATCH} at a time, model {name}")
    print(f"bytecodes per request: a {total_a:.1f}, b {total_b:.1f}, a - b {total_a - total_b:.1f}")
    print(f"a ÷ b: {total_a / total_b:.4f}")
    diff = {f: (a[f] - b[f]) / n for f in set(a) | set(b)}
    print(f"functions that differ most (a - b, per request; top {args.top}):")
    for func, d in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[: args.top]:
        if abs(d) >= 0.05:
            print(f"  {d:+8.1f}  {func}")


def main() -> int:
    parser = settings_parser(__doc__)
    parser.add_argument("--requests", type=int, default=320, help="requests counted per app")
    parser.add_argument("--top", type=int, default=12, help="functions listed")
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
