#!/usr/bin/env python3
"""End-to-end check of seqcast's container image and compose stack.

    scripts/container-smoke               # build, run, check, tear down
    scripts/container-smoke --keep        # leave the stack up afterwards
    scripts/container-smoke --no-build    # reuse the image from the last run
    scripts/container-smoke --train --torch-wheels /opt/wheels   # also the train profile

Phases (each prints its wall time):
  build    the serving image from ./Dockerfile; its size
  inspect  no torch importable and no torch in site-packages, no compiler, non-root user
  run      one container: healthy (its HEALTHCHECK), then a predict on a shipped model
  drain    concurrent slow requests, SIGTERM mid-flight: every one completes with 200
           and the container exits 0
  compose  redis + 2 API replicas + nginx (docker-compose.yml) with API keys from a
           key generated for this run: all healthy
  stream   a server-side session stepped through nginx, answered by both replicas
           (nginx's X-Seqcast-Upstream header), equal to one-shot predict (1e-5)
  failover one replica stopped mid-stream: the session continues on the other
  auth     through nginx: no key or a wrong key gets 401, /healthz and /readyz answer
           without one, both header forms and a sha256-configured key are accepted,
           and another key's client cannot see or step a session
  train    (--train) the train image; the compose train profile writes a new model
           version into the models volume; restarted replicas serve it through nginx
The single container runs with the image's defaults (no API keys); every request
to the compose stack carries the run's key (`Authorization: Bearer`), which is
never written to disk or printed (except with --keep, which leaves the stack up
for you). Everything it started is removed at the end, also on failure or Ctrl-C.

Needs podman and podman-compose (or docker with `docker compose`); standard
library Python only, so it runs from any python3.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import http.client
import http.server
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "seqcast-smoke"  # compose project: separate from a user's own `seqcast` stack
CONTAINER = "seqcast-smoke-api"
TOLERANCE = 1e-5
WHEELS_PORT = 18765  # preferred port of the local wheel server (--torch-wheels)
DRAIN_SERIES = 64  # x --drain-steps values per request: a body of about 5 MB
FAILED = 1


class SmokeFailure(Exception):
    """A check that did not hold; the message says which and what was seen."""


# ---------------------------------------------------------------------------
# output and process helpers


def say(msg: str) -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def phase(name: str, timings: dict[str, float]) -> Iterator[None]:
    say(f"\n== {name}")
    t0 = time.monotonic()
    try:
        yield
    finally:
        timings[name] = time.monotonic() - t0
        say(f"-- {name}: {timings[name]:.1f}s")


def sh(cmd: list[str], check: bool = True, timeout: float = 600, **kw: Any) -> str:
    """Run a command; its stdout (stripped). A failing checked command raises with its stderr."""
    proc: subprocess.CompletedProcess[str] = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise SmokeFailure(f"`{' '.join(cmd)}` exited {proc.returncode}:\n  " + "\n  ".join(tail))
    return proc.stdout.strip()


def wait_for(what: str, probe: Callable[[], bool], timeout: float, every: float = 1.0) -> float:
    """Poll until probe() is true; seconds it took. Bounded: raises after timeout."""
    t0 = time.monotonic()
    while True:
        if probe():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise SmokeFailure(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# ---------------------------------------------------------------------------
# HTTP (standard library only)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where requests go: 127.0.0.1:port, with the API key sent on every request (if any)."""

    port: int
    key: str | None = None


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, done_at: float) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.done_at = done_at  # time.monotonic() when the answer was complete

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    api: Endpoint,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = 60,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request; `headers` add to (or replace) the endpoint's key header."""
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if data is not None else {}
        if api.key is not None:
            sent["Authorization"] = f"Bearer {api.key}"
        sent.update(headers or {})
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        raw = resp.read()
        return Reply(
            resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw, time.monotonic()
        )
    finally:
        conn.close()


def answers(api: Endpoint, path: str, status: int = 200) -> bool:
    try:
        return request(api, "GET", path, timeout=3).status == status
    except OSError:
        return False


def expect(reply: Reply, status: int, what: str) -> Any:
    if reply.status != status:
        raise SmokeFailure(f"{what}: HTTP {reply.status}, expected {status}: {reply.body[:500]!r}")
    return reply.json() if reply.body else None


def close(a: list[float], b: list[float], what: str) -> float:
    """Largest absolute difference; fails above TOLERANCE or on a length mismatch."""
    if len(a) != len(b):
        raise SmokeFailure(f"{what}: {len(a)} values against {len(b)}")
    worst = max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)
    if not worst <= TOLERANCE:
        raise SmokeFailure(f"{what}: differ by {worst:.3g} (tolerance {TOLERANCE})")
    return worst


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sine(n: int, start: int = 0) -> list[float]:
    return [round(math.sin(0.25 * (start + i)), 6) for i in range(n)]


# ---------------------------------------------------------------------------
# container engine


class Engine:
    """podman (with podman-compose) or docker (with `docker compose`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.podman = name == "podman"
        if self.podman:
            self.compose = ["podman-compose"]
        else:
            self.compose = ["docker", "compose"]

    def build(self, tag: str, target: str = "runtime", args: dict[str, str] | None = None) -> None:
        cmd = [self.name, "build", "--target", target, "-t", tag]
        for key, value in (args or {}).items():
            cmd += ["--build-arg", f"{key}={value}"]
        if self.podman:
            # docker format keeps HEALTHCHECK; host network lets pip reach the index
            # here; never pull: the base images are local (or stand-ins).
            cmd += ["--format", "docker", "--network", "host", "--pull=never"]
        sh([*cmd, str(ROOT)], timeout=1800)

    def healthy(self, container: str) -> bool:
        """Whether the container's healthcheck passes now."""
        if self.podman:
            # podman runs healthchecks from systemd timers; without systemd (as in
            # many CI containers) none run, so run the check itself.
            proc = subprocess.run(
                ["podman", "healthcheck", "run", container], capture_output=True, timeout=30
            )
            return proc.returncode == 0
        status = sh(
            ["docker", "inspect", "--format", "{{.State.Health.Status}}", container], check=False
        )
        return status == "healthy"

    def running(self, container: str) -> bool:
        out = sh([self.name, "inspect", "--format", "{{.State.Running}}", container], check=False)
        return out == "true"

    def logs(self, container: str, lines: int = 30) -> str:
        # One pipe for both streams keeps the container's lines in their order.
        proc = subprocess.run(
            [self.name, "logs", "--tail", str(lines), container],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=30,
        )
        return proc.stdout.strip()

    def project_containers(self, service: str) -> list[str]:
        out = sh(
            [
                self.name,
                "ps",
                "--filter",
                f"label=com.docker.compose.project={PROJECT}",
                "--filter",
                f"label=com.docker.compose.service={service}",
                "--format",
                "{{.Names}}",
            ]
        )
        return sorted(out.split())

    def address(self, container: str) -> str:
        return sh(
            [
                self.name,
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                container,
            ]
        ).split()[0]


# ---------------------------------------------------------------------------
# phases


def check_image(engine: Engine, image: str) -> None:
    size = int(sh([engine.name, "image", "inspect", "--format", "{{.Size}}", image]))
    user = sh([engine.name, "image", "inspect", "--format", "{{.Config.User}}", image])
    health = sh(
        [engine.name, "image", "inspect", "--format", "{{json .Config.Healthcheck}}", image]
    )
    say(f"image {image}: {size / 1e6:.0f} MB, user {user!r}, healthcheck {health}")
    if health in ("", "null", "{}"):
        raise SmokeFailure("the image has no HEALTHCHECK")

    def inside(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [engine.name, "run", "--rm", "--entrypoint", cmd[0], image, *cmd[1:]],
            capture_output=True,
            text=True,
            timeout=120,
        )

    imp = inside("python3", "-c", "import torch")
    if imp.returncode == 0 or "No module named 'torch'" not in imp.stderr:
        raise SmokeFailure(f"`import torch` should fail in the image: rc={imp.returncode}")
    say("import torch in the image: ModuleNotFoundError (good)")
    script = (
        "import site, pathlib; "
        "hits = [str(p) for d in site.getsitepackages() for p in pathlib.Path(d).glob('torch*')]; "
        "print('\\n'.join(hits))"
    )
    found = inside("python3", "-c", script)
    if found.returncode != 0 or found.stdout.strip():
        raise SmokeFailure(f"torch files in site-packages: {found.stdout.strip()!r}")
    say("torch* in site-packages: none (good)")
    which = "import shutil; print([c for c in ('gcc', 'cc', 'g++') if shutil.which(c)])"
    cc = inside("python3", "-c", which)
    if cc.stdout.strip() != "[]":
        raise SmokeFailure(f"compilers in the image: {cc.stdout.strip()}")
    say("compilers (gcc, cc, g++): none (good)")
    uid = inside("id", "-u").stdout.strip()
    if not uid.isdigit() or int(uid) == 0:
        raise SmokeFailure(f"the container runs as uid {uid!r}; it must not be root")
    say(f"container user: uid {uid} (non-root, good)")


def pick_model(api: Endpoint, wanted: str | None) -> dict[str, Any]:
    models = expect(request(api, "GET", "/v1/models"), 200, "GET /v1/models")["models"]
    names = [m["name"] for m in models]
    say(f"models served: {', '.join(names) or '(none)'}")
    if not models:
        raise SmokeFailure("the image serves no models")
    for name in [wanted, "sine-lstm", names[0]]:
        for m in models:
            if m["name"] == name:
                return dict(m)
    raise SmokeFailure(f"model {wanted!r} is not served (have {names})")


def one_shot(api: Endpoint, name: str, values: list[float]) -> dict[str, Any]:
    body = {"series": [{"values": values}], "return_predictions": True}
    out = expect(request(api, "POST", f"/v1/models/{name}/predict", body), 200, "predict")
    return dict(out["series"][0])


def check_single(engine: Engine, image: str, api: Endpoint, wanted: str | None) -> str:
    sh([engine.name, "rm", "-f", CONTAINER], check=False)
    sh([engine.name, "run", "-d", "--name", CONTAINER, "-p", f"127.0.0.1:{api.port}:8000", image])

    def healthy() -> bool:
        if not engine.running(CONTAINER):
            raise SmokeFailure(f"the container exited:\n{engine.logs(CONTAINER)}")
        return engine.healthy(CONTAINER)

    took = wait_for("the container's healthcheck", healthy, timeout=90)
    say(f"healthy (HEALTHCHECK on /readyz) after {took:.1f}s")
    model = pick_model(api, wanted)
    name = model["name"]
    values = sine(50)
    series = one_shot(api, name, values)
    preds = series["predictions"]
    if len(preds) != len(values) or not all(math.isfinite(float(p)) for p in preds):
        raise SmokeFailure(f"predict on {name}: {len(preds)} predictions for {len(values)} values")
    say(
        f"predict {name} v{model['default_version']}: 50 values -> 50 finite one-step "
        f"predictions, forecast {series['forecast']}"
    )
    return str(name)


def check_drain(engine: Engine, api: Endpoint, name: str, clients: int, steps: int) -> None:
    """SIGTERM while requests run: each completes with 200, then the process exits 0."""
    body = {"series": [{"values": sine(steps, k)} for k in range(DRAIN_SERIES)]}
    size = len(json.dumps(body)) / 1e6
    t0 = time.monotonic()
    solo = request(api, "POST", f"/v1/models/{name}/predict", body, timeout=120)
    expect(solo, 200, "drain warm-up predict")
    one = solo.done_at - t0
    say(f"one request ({DRAIN_SERIES} series x {steps} values, {size:.1f} MB) takes {one:.2f}s")

    results: list[Reply | BaseException] = [RuntimeError("no answer")] * clients

    def client(i: int) -> None:
        try:
            results[i] = request(api, "POST", f"/v1/models/{name}/predict", body, timeout=300)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    # Long enough for every request to be sent and accepted, much shorter than the
    # clients * one seconds that they need together.
    time.sleep(min(0.5, one / 2))
    sh([engine.name, "kill", "--signal", "TERM", CONTAINER])
    t_term = time.monotonic()  # the signal has been delivered when `kill` returns
    say(f"SIGTERM sent with {clients} requests in flight")
    for t in threads:
        t.join(timeout=300)
    code = sh([engine.name, "wait", CONTAINER], timeout=120)
    t_exit = time.monotonic()
    logs = engine.logs(CONTAINER, 200)
    bad = [r for r in results if not (isinstance(r, Reply) and r.status == 200)]
    if bad:
        raise SmokeFailure(
            f"{len(bad)}/{clients} requests did not complete with 200 after SIGTERM: "
            f"{bad[:3]}\n{logs}"
        )
    done = sorted(r.done_at - t_term for r in results if isinstance(r, Reply))
    late = sum(1 for d in done if d > 0)
    # The server's own record: answers logged after it began shutting down.
    lines = logs.splitlines()
    mark = next((i for i, line in enumerate(lines) if "Shutting down" in line), None)
    if mark is None:
        raise SmokeFailure(f"the server never logged 'Shutting down' after SIGTERM:\n{logs}")
    # The front door's access log: "seqcast.access [<request id>]: POST <path> 200 <ms>ms".
    after = sum(1 for line in lines[mark:] if re.search(r"seqcast\.access .*/predict 200 ", line))
    say(
        f"all {clients} answered 200: {late} completed after SIGTERM (the last "
        f"{done[-1]:.2f}s after it), {after} logged by the server after 'Shutting down'; "
        f"exit status {code}, {t_exit - t_term:.2f}s after SIGTERM"
    )
    if late == 0 or after == 0:
        raise SmokeFailure(f"no request was in flight at SIGTERM: the check proved nothing\n{logs}")
    if code.strip() != "0":
        raise SmokeFailure(f"exit status {code} after SIGTERM:\n{logs}")
    say("server log from SIGTERM on:\n  " + "\n  ".join(lines[mark:]))


def api_keys_setting(key: str, other: str) -> str:
    """SEQCAST_API_KEYS for the stack: `key` as is, `other` by its sha256 only."""
    digest = hashlib.sha256(other.encode()).hexdigest()
    return f"smoke:{key},smoke-other:sha256:{digest}"


def compose_env(image: str, train_image: str, lb_port: int, api_keys: str) -> dict[str, str]:
    # These override the same names in the user's environment or .env file.
    return {
        **os.environ,
        "SEQCAST_IMAGE": image,
        "SEQCAST_TRAIN_IMAGE": train_image,
        "SEQCAST_HTTP_PORT": str(lb_port),
        "SEQCAST_API_KEYS": api_keys,
    }


def compose(engine: Engine, env: dict[str, str], *args: str, check: bool = True) -> str:
    return sh(
        [*engine.compose, "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"), *args],
        check=check,
        env=env,
        cwd=ROOT,
    )


def check_compose(engine: Engine, env: dict[str, str], lb: Endpoint) -> dict[str, str]:
    compose(engine, env, "up", "-d")
    apis = engine.project_containers("api")
    if len(apis) < 2:
        raise SmokeFailure(f"compose started {len(apis)} api replica(s), expected at least 2")
    others = engine.project_containers("redis") + engine.project_containers("nginx")
    for ctr in [*others, *apis]:
        took = wait_for(f"{ctr} to be healthy", partial(engine.healthy, ctr), timeout=120)
        say(f"{ctr}: healthy after {took:.1f}s")
    wait_for("/readyz through nginx", lambda: answers(lb, "/readyz"), timeout=60)
    replicas = {engine.address(c): c for c in apis}
    say(f"api replicas: {', '.join(f'{c} ({a})' for a, c in sorted(replicas.items()))}")
    return replicas


def flat(matrix: list[list[float]]) -> list[float]:
    return [float(v) for row in matrix for v in row]


def check_stream(lb: Endpoint, name: str, replicas: dict[str, str]) -> None:
    """A server-side session stepped through nginx equals one-shot predict."""
    chunks = [1, 3, 7, 2, 5, 1, 8, 4, 6, 3, 2, 9]
    values = sine(sum(chunks), 7)
    whole = one_shot(lb, name, values)

    def replica(reply: Reply) -> str:
        upstream = reply.headers.get("x-seqcast-upstream", "?")
        return replicas.get(upstream.rsplit(":", 1)[0], upstream)

    created = expect(request(lb, "POST", f"/v1/models/{name}/sessions", {}), 201, "create session")
    sid = created["session"]
    say(f"session {sid} on {name} v{created['version']}")
    offset = 0
    preds: list[float] = []
    seen: list[str] = []
    last: dict[str, Any] = {}
    step: dict[str, Any] = {}
    for size in chunks:
        step = {"offset": offset, "values": values[offset : offset + size]}
        reply = request(lb, "POST", f"/v1/sessions/{sid}/observe", step)
        last = expect(reply, 200, f"observe at offset {offset}")
        seen.append(replica(reply))
        preds += [float(p) for p in last["predictions"]]
        offset += size
        if last["offset"] != offset:
            raise SmokeFailure(f"session offset {last['offset']}, expected {offset}")
    say(f"{len(chunks)} steps ({offset} values), answered by: {' '.join(seen)}")
    distinct = sorted(set(seen))
    if len(distinct) < 2:
        raise SmokeFailure(f"every step was answered by {distinct}: the load was not balanced")

    diffs = [
        close(preds, [float(p) for p in whole["predictions"]], "session vs one-shot predictions"),
        close(
            [float(f) for f in last["forecast"]],
            [float(f) for f in whole["forecast"]],
            "session vs one-shot forecast",
        ),
    ]
    info = expect(request(lb, "GET", f"/v1/sessions/{sid}?state=true"), 200, "describe session")
    for part in ("h", "c"):
        if part in whole["state"]:
            diffs.append(
                close(
                    flat(info["state"][part]),
                    flat(whole["state"][part]),
                    f"session vs one-shot state {part}",
                )
            )
    say(
        f"session predictions, forecast and state equal one-shot predict over the "
        f"{offset} values: max |diff| {max(diffs):.2e} <= {TOLERANCE}"
    )

    # A retried step (the client never saw the answer) is answered from the shared
    # store, whichever replica takes it, without advancing the session again.
    retry = request(lb, "POST", f"/v1/sessions/{sid}/observe", step)
    if expect(retry, 200, "retry of the last step") != last:
        raise SmokeFailure("a retried step answered differently from the original")
    if retry.headers.get("seqcast-replayed") != "true":
        raise SmokeFailure("a retried step was not marked Seqcast-Replayed: true")
    after = expect(request(lb, "GET", f"/v1/sessions/{sid}"), 200, "describe session")
    if after["offset"] != offset:
        raise SmokeFailure(f"a retried step moved the session to offset {after['offset']}")
    say(f"retry of the last step (via {replica(retry)}): same answer, replayed, offset {offset}")
    expect(request(lb, "DELETE", f"/v1/sessions/{sid}"), 204, "delete session")


def check_failover(engine: Engine, lb: Endpoint, name: str, replicas: dict[str, str]) -> None:
    """A replica stopped mid-stream: the session goes on, through nginx, on the other one."""
    chunks = [4, 3, 5, 2, 6, 1, 7, 3]
    values = sine(sum(chunks), 3)
    whole = one_shot(lb, name, values)
    sid = expect(request(lb, "POST", f"/v1/models/{name}/sessions", {}), 201, "create")["session"]
    victim = sorted(replicas.values())[0]
    offset = 0
    preds: list[float] = []
    seen: list[str] = []
    for i, size in enumerate(chunks):
        if i == len(chunks) // 2:
            t0 = time.monotonic()
            sh([engine.name, "stop", "-t", "30", victim])
            say(f"stopped {victim} after {offset} values ({time.monotonic() - t0:.1f}s)")
            seen.append("|")
        step = {"offset": offset, "values": values[offset : offset + size]}
        t0 = time.monotonic()
        reply = request(lb, "POST", f"/v1/sessions/{sid}/observe", step)
        body = expect(reply, 200, f"observe at offset {offset}")
        upstream = reply.headers.get("x-seqcast-upstream", "?")
        # nginx lists every address it tried; the last one answered.
        answered = upstream.split(",")[-1].strip().rsplit(":", 1)[0]
        took = time.monotonic() - t0
        seen.append(replicas.get(answered, answered) + (f"({took:.1f}s)" if took > 0.5 else ""))
        preds += [float(p) for p in body["predictions"]]
        offset += size
    say(f"steps answered by: {' '.join(seen)}")
    after = seen[seen.index("|") + 1 :]
    if any(a.startswith(victim) for a in after):
        raise SmokeFailure(f"{victim} answered after it was stopped: {after}")
    worst = close(preds, [float(p) for p in whole["predictions"]], "session across the failover")
    say(f"the session continued on the other replica; equal to one-shot (max |diff| {worst:.2e})")


def check_auth(lb: Endpoint, name: str, other_key: str) -> None:
    """API keys through nginx: enforced, both header forms, health open, sessions per key."""
    if lb.key is None:
        raise SmokeFailure("the stack's endpoint has no key to check")
    anonymous = Endpoint(lb.port)
    other = Endpoint(lb.port, other_key)
    digest = hashlib.sha256(other_key.encode()).hexdigest()
    predict = f"/v1/models/{name}/predict"
    body = {"series": [{"values": sine(5)}]}
    refused: list[tuple[str, str, dict[str, str], str]] = [
        ("GET", "/v1/models", {}, "GET /v1/models without a key"),
        ("POST", predict, {}, "predict without a key"),
        ("POST", f"/v1/models/{name}/sessions", {}, "create session without a key"),
        ("GET", "/v1/models", {"Authorization": f"Bearer not-{lb.key}"}, "a wrong Bearer key"),
        ("POST", predict, {"X-API-Key": f"not-{lb.key}"}, "a wrong X-API-Key"),
        # The configured hash is not itself a key.
        ("GET", "/v1/models", {"Authorization": f"Bearer {digest}"}, "a key's sha256 as key"),
    ]
    for method, path, headers, what in refused:
        reply = request(anonymous, method, path, body if method == "POST" else None, 60, headers)
        error = expect(reply, 401, what)
        if not isinstance(error, dict) or error.get("error", {}).get("status") != 401:
            raise SmokeFailure(f"{what}: 401 without the error shape: {reply.body[:300]!r}")
    say("no key, a wrong key (either header), or a key's sha256: 401 (models, predict, sessions)")
    for path in ("/healthz", "/readyz"):
        expect(request(anonymous, "GET", path), 200, f"{path} without a key")
    say("/healthz and /readyz without a key: 200")
    header = {"X-API-Key": lb.key}
    expect(request(anonymous, "POST", predict, body, headers=header), 200, "X-API-Key predict")
    expect(request(other, "GET", "/v1/models"), 200, "the key configured by its sha256")
    say("X-API-Key accepted; a key configured as name:sha256:<hex> accepted")

    sid = expect(request(lb, "POST", f"/v1/models/{name}/sessions", {}), 201, "create")["session"]
    step = {"offset": 0, "values": sine(3)}
    for method, path, sent in [
        ("GET", f"/v1/sessions/{sid}?state=true", None),
        ("POST", f"/v1/sessions/{sid}/observe", step),
        ("DELETE", f"/v1/sessions/{sid}", None),
    ]:
        reply = request(other, method, path, sent)
        if reply.status not in (403, 404):
            raise SmokeFailure(
                f"{method} {path} with another key: HTTP {reply.status}, expected 403 or 404: "
                f"{reply.body[:300]!r}"
            )
    info = expect(request(lb, "GET", f"/v1/sessions/{sid}"), 200, "describe own session")
    if info["offset"] != 0:
        raise SmokeFailure(f"another key's step moved the session to offset {info['offset']}")
    expect(request(lb, "DELETE", f"/v1/sessions/{sid}"), 204, "delete own session")
    say("a session is invisible to another key (describe, observe, delete: 403/404)")


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def wheel_server(directory: str | None) -> Iterator[dict[str, str]]:
    """Build args for the train image; with a wheel directory, serve it to the build.

    An offline machine cannot reach PyTorch's CPU index: serve a local directory of
    wheels over HTTP instead (the build runs on the host network, so it reaches
    127.0.0.1) and pass it as TORCH_FIND_LINKS.
    """
    if directory is None:
        yield {}
        return
    # A fixed port when free: the URL is a build argument, and a new value every
    # run would invalidate the cached torch layer.
    handler = partial(_QuietFiles, directory=directory)
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEELS_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield {"TORCH_INDEX_URL": "", "TORCH_FIND_LINKS": f"http://127.0.0.1:{port}/"}
    finally:
        server.shutdown()
        server.server_close()


def served_version(lb: Endpoint, name: str) -> int:
    reply = request(lb, "GET", f"/v1/models/{name}", timeout=5)
    return int(reply.json()["default_version"]) if reply.status == 200 else -1


def check_train(engine: Engine, env: dict[str, str], lb: Endpoint, name: str, epochs: int) -> None:
    """The train profile adds a version to the models volume; restarted replicas serve it."""
    before = expect(request(lb, "GET", f"/v1/models/{name}"), 200, "model info")
    new = max(before["versions"]) + 1
    cell = before["latest"]["cell"]
    t0 = time.monotonic()
    out = compose(
        engine,
        env,
        "--profile",
        "train",
        "run",
        "--rm",
        "train",
        "train",
        "--cell",
        cell,
        "--name",
        name,
        "--epochs",
        str(epochs),
        "--out",
        "/app/models",
        "--no-progress",
    )
    summary = [line for line in out.splitlines() if "/app/models/" in line]
    say(f"train job ({time.monotonic() - t0:.1f}s): {summary[-1] if summary else out[-300:]}")
    if not any(f"/app/models/{name}/{new}" in line for line in summary):
        raise SmokeFailure(f"the train job did not report writing {name}/{new}:\n{out[-1500:]}")
    if served_version(lb, name) != max(before["versions"]):
        raise SmokeFailure("the replicas changed versions before they were restarted")

    t0 = time.monotonic()
    compose(engine, env, "restart", "api")
    for ctr in engine.project_containers("api"):
        wait_for(f"{ctr} to be healthy", partial(engine.healthy, ctr), timeout=120)

    # Every replica, through nginx (which follows their new addresses), serves it.
    def all_new() -> bool:
        return all(served_version(lb, name) == new for _ in range(4))

    wait_for(f"{name} v{new} through nginx", all_new, timeout=60)
    say(f"restarted replicas serve {name} v{new} ({time.monotonic() - t0:.1f}s)")
    values = sine(30)
    path = f"/v1/models/{name}/versions/{new}/predict"
    series = expect(request(lb, "POST", path, {"series": [{"values": values}]}), 200, path)
    say(f"predict {name} v{new}: forecast {series['series'][0]['forecast']}")


# ---------------------------------------------------------------------------


def teardown(engine: Engine, env: dict[str, str]) -> None:
    """Remove the single container and the compose project, whatever state they are in."""
    sh([engine.name, "rm", "-f", "-t", "5", CONTAINER], check=False)
    compose(engine, env, "down", "-v", "-t", "10", check=False)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="container-smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["podman", "docker"], default=None)
    parser.add_argument("--image", default="localhost/seqcast:smoke")
    parser.add_argument("--no-build", action="store_true", help="use the existing --image")
    parser.add_argument("--model", default=None, help="model to check (default sine-lstm)")
    parser.add_argument("--port", type=int, default=0, help="host port of the single run")
    parser.add_argument("--lb-port", type=int, default=0, help="host port of nginx")
    parser.add_argument("--drain-clients", type=int, default=8)
    parser.add_argument("--drain-steps", type=int, default=8000)
    parser.add_argument("--keep", action="store_true", help="leave the compose stack running")
    parser.add_argument(
        "--train",
        action="store_true",
        help="also build the train image and check the compose train profile",
    )
    parser.add_argument("--train-image", default="localhost/seqcast-train:smoke")
    parser.add_argument("--train-epochs", type=int, default=2)
    parser.add_argument(
        "--torch-wheels",
        metavar="DIR",
        help="local directory with the torch wheel, for building the train image offline",
    )
    args = parser.parse_args(argv)

    engine = Engine(args.engine or ("podman" if shutil.which("podman") else "docker"))
    if not shutil.which(engine.name) or not shutil.which(engine.compose[0]):
        say(f"container-smoke: needs {engine.name} and {' '.join(engine.compose)}")
        return FAILED
    # Free host ports by default: a published port that another process already
    # listens on would silently send the checks to that process instead.
    args.port = args.port or free_port()
    args.lb_port = args.lb_port or free_port()
    # Fresh keys every run: the stack's own, and a second client's for the auth phase.
    key, other_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    single = Endpoint(args.port)  # the image's defaults: no keys
    lb = Endpoint(args.lb_port, key)
    env = compose_env(args.image, args.train_image, args.lb_port, api_keys_setting(key, other_key))
    timings: dict[str, float] = {}
    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so the finally block cleans up.
    signal.signal(signal.SIGTERM, _interrupt)
    ok = False
    t0 = time.monotonic()
    try:
        with phase("cleanup", timings):
            teardown(engine, env)  # leftovers of an interrupted run
        with phase("build", timings):
            if not args.no_build:
                engine.build(args.image)
        with phase("inspect", timings):
            check_image(engine, args.image)
        with phase("run", timings):
            name = check_single(engine, args.image, single, args.model)
        with phase("drain", timings):
            check_drain(engine, single, name, args.drain_clients, args.drain_steps)
        with phase("compose", timings):
            replicas = check_compose(engine, env, lb)
        with phase("stream", timings):
            check_stream(lb, name, replicas)
        with phase("failover", timings):
            check_failover(engine, lb, name, replicas)
        with phase("auth", timings):
            check_auth(lb, name, other_key)
        if args.train:
            with phase("train-build", timings), wheel_server(args.torch_wheels) as build_args:
                if not args.no_build:
                    engine.build(args.train_image, target="train", args=build_args)
            with phase("train", timings):
                check_train(engine, env, lb, name, args.train_epochs)
        ok = True
    except SmokeFailure as exc:
        say(f"\nFAILED: {exc}")
    except KeyboardInterrupt:
        say("\ninterrupted")
    except Exception:
        say("\nFAILED with an unexpected error:\n" + traceback.format_exc())
    finally:
        if args.keep and ok:
            say(f"\nstack left running on http://127.0.0.1:{args.lb_port} (--keep)")
            say(f"its API key (this run's, throwaway): Authorization: Bearer {key}")
            sh([engine.name, "rm", "-f", "-t", "5", CONTAINER], check=False)
        else:
            with phase("teardown", timings):
                teardown(engine, env)
    say("\ntimings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    say(f"container-smoke: {'PASSED' if ok else 'FAILED'} in {time.monotonic() - t0:.1f}s")
    return 0 if ok else FAILED


if __name__ == "__main__":
    sys.exit(main())
