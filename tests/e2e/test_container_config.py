"""The container files agree with the project: dependencies, compose stack, build context.

These read the files only (no container engine), so they run everywhere in
milliseconds; scripts/container-smoke builds and runs the images for real.
"""

from __future__ import annotations

import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(DEPLOY / "requirements.py"), "--pyproject", "pyproject.toml", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.splitlines()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


# ---------------------------------------------------------------------------
# deploy/requirements.py: the image's dependency layer


def test_serving_requirements_are_the_default_install_without_torch() -> None:
    reqs = _requirements()
    assert reqs == _pyproject()["dependencies"]
    assert not [r for r in reqs if r.startswith("torch")]


def test_train_requirements_add_the_pinned_torch() -> None:
    reqs = _requirements("--extra", "train")
    project = _pyproject()
    assert reqs == project["dependencies"] + project["optional-dependencies"]["train"]
    assert "torch==2.13.0" in reqs


def test_gpu_requirements_swap_onnxruntime_only() -> None:
    cpu, gpu = _requirements(), _requirements("--gpu")
    assert len(cpu) == len(gpu)
    changed = [(c, g) for c, g in zip(cpu, gpu, strict=True) if c != g]
    assert len(changed) == 1
    cpu_req, gpu_req = changed[0]
    assert cpu_req.startswith("onnxruntime")
    assert gpu_req == "onnxruntime-gpu" + cpu_req[11:]


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        ("onnxruntime>=1.18", "onnxruntime-gpu>=1.18"),
        ("onnxruntime", "onnxruntime-gpu"),
        ("ONNXRuntime==1.20.1", "onnxruntime-gpu==1.20.1"),
        ("onnxruntime-extensions>=0.9", "onnxruntime-extensions>=0.9"),
        ("numpy>=1.26", "numpy>=1.26"),
    ],
)
def test_gpu_swap_matches_the_distribution_name(req: str, expected: str) -> None:
    spec = importlib.util.spec_from_file_location(
        "_deploy_requirements", DEPLOY / "requirements.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._to_gpu(req) == expected


# ---------------------------------------------------------------------------
# docker-compose.yml


def test_api_runs_replicas_on_redis_sessions(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    # podman-compose honours deploy.replicas only when the mode is spelled out.
    assert api["deploy"] == {"mode": "replicated", "replicas": 2}
    assert "container_name" not in api
    assert "ports" not in api
    env = api["environment"]
    assert env["SEQCAST_SESSION_STORE"] == "redis"
    assert env["SEQCAST_REDIS_URL"] == "redis://redis:6379/0"
    assert api["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert api["healthcheck"]["test"] == ["CMD", "python3", "/opt/seqcast/healthcheck.py"]


def test_api_keys_are_on_and_come_from_the_user(compose: dict[str, Any]) -> None:
    env = compose["services"]["api"]["environment"]
    # Required from the user's environment (or .env), with no default to fall back on:
    # compose refuses to start the stack without it, and no key is committed here.
    assert re.fullmatch(r"\$\{SEQCAST_API_KEYS:\?[^}]+\}", env["SEQCAST_API_KEYS"])
    assert "SEQCAST_API_KEYS_FILE" not in env
    # The health endpoints stay open (the default), so the probes need no key.
    assert env.get("SEQCAST_AUTH_EXEMPT", "health") == "health"
    assert "/readyz" in (DEPLOY / "healthcheck.py").read_text()


def test_redis_is_bounded_and_never_evicts_sessions(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    # A ceiling by default, which SEQCAST_REDIS_MAXMEMORY can move.
    assert re.fullmatch(r"\$\{SEQCAST_REDIS_MAXMEMORY:-[1-9]\d*[mg]b\}", options["--maxmemory"])
    # Sessions are never dropped silently: a full Redis refuses writes (the API answers 503).
    assert options["--maxmemory-policy"] == "noeviction"


def test_redis_keeps_acknowledged_steps_across_a_restart(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    options = dict(zip(redis["command"][1::2], redis["command"][2::2], strict=True))
    # Every change goes to the append-only file, fsynced once a second: a killed
    # Redis comes back with what it acknowledged (tests/service/test_sessions_durability.py).
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    # ... in a volume of its own, so the file outlives the container.
    assert options["--dir"] == "/data"
    assert redis["volumes"] == ["redis-data:/data"]
    assert "redis-data" in compose["volumes"]
    assert redis["restart"] == "unless-stopped"


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """docker-compose.yml as the installed compose resolves it, from `env` alone."""
    compose_file = str(ROOT / "docker-compose.yml")
    if shutil.which("podman-compose"):
        # --dry-run: resolve the file without asking podman anything.
        cmd = ["podman-compose", "--dry-run", "-f", compose_file]
    elif (
        shutil.which("docker")
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        cmd = ["docker", "compose", "-f", compose_file]
    else:
        pytest.skip("neither podman-compose nor docker compose is installed")
    # --env-file /dev/null: a developer's own .env must not decide the outcome.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEQCAST_")}
    return subprocess.run(
        [*cmd, "--env-file", "/dev/null", "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_engine_refuses_to_run_without_keys() -> None:
    result = _compose_config({})
    assert result.returncode != 0
    assert "SEQCAST_API_KEYS" in result.stdout + result.stderr


def test_compose_engine_passes_the_keys_and_redis_bounds() -> None:
    keys = "ops:0123456789abcdef0123,ci:sha256:" + "ab" * 32
    result = _compose_config({"SEQCAST_API_KEYS": keys})
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert resolved["api"]["environment"]["SEQCAST_API_KEYS"] == keys
    command = resolved["redis"]["command"]
    assert command[command.index("--maxmemory") + 1] == "512mb"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"


def test_nginx_fronts_the_healthy_api(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    assert nginx["image"] == "nginx:1.27"
    assert nginx["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    # Started through the script that reloads nginx when the replicas' addresses change.
    assert nginx["entrypoint"] == ["/bin/sh", "/etc/nginx/seqcast-start.sh"]
    assert "./deploy/nginx-start.sh:/etc/nginx/seqcast-start.sh:ro" in nginx["volumes"]
    conf = (DEPLOY / "nginx.conf").read_text()
    # The upstream is the compose service name and the port the API listens on.
    assert re.search(r"upstream seqcast_api \{\s*server api:8000\b", conf)
    assert "proxy_pass http://seqcast_api;" in conf
    assert "add_header X-Seqcast-Upstream $upstream_addr always;" in conf
    assert compose["services"]["redis"]["image"] == "redis:7"


def test_train_profile_writes_the_volume_the_api_reads(compose: dict[str, Any]) -> None:
    services = compose["services"]
    train = services["train"]
    assert train["profiles"] == ["train"]
    assert train["build"]["target"] == "train"
    assert "models:/app/models" in train["volumes"]
    assert train["command"][0] == "train"
    assert "models:/app/models:ro" in services["api"]["volumes"]
    assert "models" in compose["volumes"]
    # Every other service runs without a profile: `up` starts the serving stack only.
    assert [n for n, s in services.items() if "profiles" in s] == ["train"]


def test_compose_holds_no_secrets() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"(?i)(password|secret|token|api_key)\s*[:=]", text)
    assert not re.search(r"redis://[^/\s]*@", text)  # no credentials in the Redis URL


# ---------------------------------------------------------------------------
# Dockerfile and .dockerignore


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_stages_and_default_target() -> None:
    stages = re.findall(r"^FROM \S+ AS (\S+)$", _dockerfile(), flags=re.M)
    assert stages == ["requirements", "builder", "train", "gpu", "runtime"]  # last = default


def test_serving_stages_run_as_non_root_with_healthcheck_and_exec_form() -> None:
    text = _dockerfile()
    for stage in ("gpu", "runtime"):
        body = text.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        assert "\nUSER seqcast\n" in body
        assert "HEALTHCHECK" in body
        assert '"/opt/seqcast/healthcheck.py"]' in body
        assert '\nENTRYPOINT ["seqcast"]\nCMD ["serve"]' in body
        assert "SEQCAST_HOST=0.0.0.0" in body
        assert "SEQCAST_MODEL_DIR=/app/models" in body


def test_build_context_keeps_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources: set[str] = set()
    for line in _dockerfile().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            words = [w for w in line.split()[1:] if not w.startswith("--")]
            sources.update(w.rstrip("/") for w in words[:-1])
    assert sources
    assert sources <= allowed, f"copied but ignored: {sources - allowed}"


# ---------------------------------------------------------------------------
# deploy/healthcheck.py


class _Readyz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def readyz_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _probe(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py")],
        env={"SEQCAST_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_healthcheck_follows_readyz(
    readyz_server: http.server.HTTPServer, status: int, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Readyz, "status", status)
    assert _probe(readyz_server.server_address[1]).returncode == code


def test_healthcheck_fails_when_nothing_listens() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Readyz)
    port = server.server_address[1]
    server.server_close()  # the port is now closed
    result = _probe(port)
    assert result.returncode == 1
    assert f"http://127.0.0.1:{port}/readyz" in result.stderr
