"""deploy/kubernetes agrees with the code and with itself: every SEQCAST_ variable is a
real setting, the app answers the probes' paths with the manifests' settings, ports,
selectors, names and sizes line up, and Redis is configured as docker-compose.yml's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.deploy.kube import K8S, ROOT, objects, one, quantity, redis_bytes
from tests.redis_fixture import RedisServer

BASE = objects(K8S)
KSERVE = objects(K8S / "kserve")
MANIFEST_FILES = sorted(K8S.rglob("*.yaml"))
DOCKERFILE = (ROOT / "Dockerfile").read_text()
API_KEY = "k8s-test-key-0123456789"  # a test secret, in a file as the Secret's mount


def _pod(kind: str) -> dict[str, Any]:
    """The pod spec of the Deployment or StatefulSet of `kind`."""
    spec: dict[str, Any] = one(BASE, kind)["spec"]["template"]["spec"]
    return spec


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod["containers"]
    assert len(containers) == 1
    return containers[0]


def _config() -> dict[str, str]:
    data: dict[str, str] = one(BASE, "ConfigMap", "seqcast-config")["data"]
    return data


def _runtime() -> dict[str, Any]:
    return one(KSERVE, "ServingRuntime")


def _runtime_env() -> dict[str, str]:
    env = _container(_runtime()["spec"])["env"]
    return {e["name"]: e["value"] for e in env}


def _predictor() -> dict[str, Any]:
    predictor: dict[str, Any] = one(KSERVE, "InferenceService")["spec"]["predictor"]
    return predictor


def _probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        kind: container[f"{kind}Probe"]
        for kind in ("startup", "liveness", "readiness")
        if f"{kind}Probe" in container
    }


def _subset(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


# ---------------------------------------------------------------------------
# settings


def test_every_seqcast_variable_in_the_manifests_is_a_setting() -> None:
    settings = {f"SEQCAST_{name.upper()}" for name in Settings.model_fields}
    for path in MANIFEST_FILES:
        # Comments too: a setting named in a comment must exist as well.
        named = set(re.findall(r"SEQCAST_[A-Z0-9_]+", path.read_text()))
        assert named <= settings, f"{path.relative_to(ROOT)}: not settings: {named - settings}"


def test_the_deployment_takes_its_settings_from_the_configmap() -> None:
    container = _container(_pod("Deployment"))
    assert container["envFrom"] == [{"configMapRef": {"name": "seqcast-config"}}]
    assert "env" not in container  # one place for the settings
    assert container["args"] == ["serve"]


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys"
    path.write_text(f"# the Secret's file\nops:{API_KEY}\n")
    return path


def _settings(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **local: str | Path
) -> Settings:
    """Settings read from `env` as the pod's environment, with the paths and addresses
    that only exist in a cluster (`local`) pointed at this machine's."""
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"SEQCAST_{name.upper()}", raising=False)
    for name, value in {**env, **{k: str(v) for k, v in local.items()}}.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.mark.parametrize("where", ["deployment", "kserve"])
def test_the_settings_are_accepted_and_the_app_answers_the_probes(
    where: str,
    redis_server: RedisServer,
    keys_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if where == "deployment":
        env, container = _config(), _container(_pod("Deployment"))
    else:
        env, container = _runtime_env(), _container(_runtime()["spec"])
    settings = _settings(
        env,
        monkeypatch,
        # The image's models (Dockerfile: COPY models /app/models); KServe's are a copy.
        SEQCAST_MODEL_DIR=ROOT / "models",
        SEQCAST_REDIS_URL=redis_server.url,
        SEQCAST_API_KEYS_FILE=keys_file,
    )
    assert settings.session_store == "redis"
    with TestClient(create_app(settings)) as client:
        for kind, probe in _probes(container).items():
            # No key: kubelet sends none.
            answer = client.get(probe["httpGet"]["path"])
            assert answer.status_code == 200, (kind, probe, answer.text)
        # Keys are on (from the mounted file) for everything else ...
        assert client.get("/v1/models").status_code == 401
        # ... and sessions go to Redis.
        auth = {"Authorization": f"Bearer {API_KEY}"}
        created = client.post("/v1/models/sine-lstm/sessions", headers=auth)
        assert created.status_code == 201, created.text
        key = f"seqcast:session:{created.json()['session']}"
        assert redis_server.client().exists(key) == 1
    assert {"startup", "liveness", "readiness"} <= set(_probes(container))


def test_the_image_serves_the_v2_protocol_kserve_is_told_about(
    make_client: Any,
) -> None:
    assert "v2" in _runtime()["spec"]["protocolVersions"]
    with make_client(model_dir=ROOT / "models") as client:
        if client.get("/v2/health/live").status_code == 404:
            pytest.skip("this build has no /v2 (Open Inference Protocol) endpoints yet")
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/v2/models/sine-lstm/ready").status_code == 200


def test_the_api_keys_file_is_the_mounted_secret() -> None:
    for env, pod_volumes, container in [
        (_config(), _pod("Deployment")["volumes"], _container(_pod("Deployment"))),
        (_runtime_env(), _runtime()["spec"]["volumes"], _container(_runtime()["spec"])),
    ]:
        keys_path = Path(env["SEQCAST_API_KEYS_FILE"])
        mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
        assert mount["readOnly"] is True
        volume = next(v for v in pod_volumes if v["name"] == "api-keys")["secret"]
        assert volume["secretName"] == "seqcast-api-keys"
        assert [Path(mount["mountPath"]) / i["path"] for i in volume["items"]] == [keys_path]
        assert "SEQCAST_API_KEYS" not in env  # never the keys themselves
        # The probe paths stay open without a key.
        assert "health" in env.get("SEQCAST_AUTH_EXEMPT", "health").split(",")


# ---------------------------------------------------------------------------
# ports, selectors, names


def test_the_ports_agree() -> None:
    container = _container(_pod("Deployment"))
    (port,) = container["ports"]
    assert port == {
        "name": "http",
        "containerPort": int(_config()["SEQCAST_PORT"]),
        "protocol": "TCP",
    }
    assert f"EXPOSE {port['containerPort']}" in DOCKERFILE
    assert f"SEQCAST_PORT={port['containerPort']}" in DOCKERFILE
    service = one(BASE, "Service", "seqcast")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    for probe in _probes(container).values():
        assert probe["httpGet"]["port"] == "http"
    # KServe: the first container port is the one its Service targets.
    runtime = _container(_runtime()["spec"])
    kserve_port = runtime["ports"][0]["containerPort"]
    assert kserve_port == int(_runtime_env()["SEQCAST_PORT"])
    for probe in _probes(runtime).values():
        assert probe["httpGet"]["port"] == kserve_port


def test_the_selectors_pick_the_right_pods() -> None:
    deployment = one(BASE, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _subset(deployment["spec"]["selector"]["matchLabels"], labels)
    assert _subset(one(BASE, "Service", "seqcast")["spec"]["selector"], labels)
    assert _subset(one(BASE, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    target = one(BASE, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "seqcast"}

    redis = one(BASE, "StatefulSet", "seqcast-redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert _subset(redis["spec"]["selector"]["matchLabels"], redis_labels)
    headless = one(BASE, "Service", "seqcast-redis")
    assert headless["spec"]["clusterIP"] == "None"
    assert redis["spec"]["serviceName"] == headless["metadata"]["name"]
    assert _subset(headless["spec"]["selector"], redis_labels)
    # The seqcast Service must not select Redis, nor the other way round.
    assert not _subset(one(BASE, "Service", "seqcast")["spec"]["selector"], redis_labels)
    assert not _subset(headless["spec"]["selector"], labels)

    policy = one(BASE, "NetworkPolicy")["spec"]
    assert _subset(policy["podSelector"]["matchLabels"], redis_labels)
    (rule,) = policy["ingress"]
    (source,) = rule["from"]
    clients = source["podSelector"]["matchLabels"]
    # Both ways of running seqcast reach Redis; Redis itself is not a client.
    assert _subset(clients, labels)
    assert _subset(clients, _predictor()["labels"])
    assert not _subset(clients, redis_labels)
    assert [p["port"] for p in rule["ports"]] == ["redis"]


def test_the_session_store_is_the_redis_service() -> None:
    headless = one(BASE, "Service", "seqcast-redis")
    (service_port,) = headless["spec"]["ports"]
    (container_port,) = _container(_pod("StatefulSet"))["ports"]
    assert service_port["targetPort"] == container_port["name"]
    for env in (_config(), _runtime_env()):
        assert env["SEQCAST_SESSION_STORE"] == "redis"
        url = urlsplit(env["SEQCAST_REDIS_URL"])
        assert (url.scheme, url.hostname, url.port) == (
            "redis",
            headless["metadata"]["name"],
            service_port["port"],
        )
        # A Redis restart must not take every seqcast pod out of its Service.
        assert env["SEQCAST_READY_NEEDS_STORE"] == "false"
    assert container_port["containerPort"] == service_port["port"] == 6379


def test_the_image_is_the_one_kustomize_rewrites() -> None:
    for directory, containers in [
        (K8S, [_container(_pod("Deployment"))]),
        (K8S / "kserve", [_container(_runtime()["spec"])]),
    ]:
        images = yaml.safe_load((directory / "kustomization.yaml").read_text())["images"]
        names = {i["name"] for i in images}
        assert {c["image"].split(":")[0] for c in containers} <= names


# ---------------------------------------------------------------------------
# the process: user, file system, shutdown, resources


def _dockerfile_uid() -> int:
    runtime_stage = DOCKERFILE.split("AS runtime", 1)[1]
    match = re.search(r"useradd --uid (\d+) --gid seqcast", runtime_stage)
    assert match
    return int(match.group(1))


def test_seqcast_runs_as_the_image_user_on_a_read_only_root() -> None:
    uid = _dockerfile_uid()
    for pod_context, container, volumes in [
        (
            _pod("Deployment")["securityContext"],
            _container(_pod("Deployment")),
            _pod("Deployment")["volumes"],
        ),
        (
            _predictor()["securityContext"],
            _container(_runtime()["spec"]),
            _runtime()["spec"]["volumes"],
        ),
    ]:
        assert pod_context["runAsNonRoot"] is True
        assert pod_context["runAsUser"] == pod_context["fsGroup"] == uid
        assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        # The one place seqcast writes (the metrics directory of several workers, under
        # tempfile's directory) is a writable emptyDir.
        tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        assert "emptyDir" in next(v for v in volumes if v["name"] == tmp["name"])


def test_the_models_come_from_the_image_or_kserve_storage() -> None:
    image_dir = re.search(r"SEQCAST_MODEL_DIR=(\S+)", DOCKERFILE)
    assert image_dir
    assert _config()["SEQCAST_MODEL_DIR"] == image_dir.group(1) == "/app/models"
    assert "COPY --chown=seqcast:seqcast models /app/models" in DOCKERFILE
    # KServe puts the storageUri's files at /mnt/models.
    assert _runtime_env()["SEQCAST_MODEL_DIR"] == "/mnt/models"
    assert _predictor()["model"]["storageUri"]


def test_termination_outlasts_the_shutdown_timeout() -> None:
    pod = _pod("Deployment")
    container = _container(pod)
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    shutdown = float(_config()["SEQCAST_SHUTDOWN_TIMEOUT_S"])
    # kubelet's clock runs from the preStop hook: the pause, then SIGTERM and up to
    # shutdown_timeout_s of in-flight requests, then seqcast exits before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= int(pause[1]) + shutdown + 3
    kserve_shutdown = float(_runtime_env()["SEQCAST_SHUTDOWN_TIMEOUT_S"])
    assert _predictor()["terminationGracePeriodSeconds"] >= kserve_shutdown + 3


def test_resources_match_the_process() -> None:
    for env, container in [
        (_config(), _container(_pod("Deployment"))),
        (_runtime_env(), _container(_runtime()["spec"])),
    ]:
        resources = container["resources"]
        cpu_limit = quantity(resources["limits"]["cpu"])
        # seqcast counts the node's CPUs, not the pod's limit: the pool is set to fit it,
        # keeping a core for the event loop.
        pool_runs = int(env["SEQCAST_POOL_RUNS"])
        assert 1 <= pool_runs <= cpu_limit - 1
        assert int(env["SEQCAST_WORKERS"]) == 1
        # docs/benchmarks.md: 520 MiB at the peak of three maximum-size requests.
        assert quantity(resources["limits"]["memory"]) >= 2 * 520 * 2**20
        assert quantity(resources["requests"]["memory"]) >= 184 * 2**20  # settled after them
        assert quantity(resources["requests"]["cpu"]) <= cpu_limit
    # The HPA scales on a share of the CPU request, which must exist.
    assert one(BASE, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2


# ---------------------------------------------------------------------------
# Redis: as docker-compose.yml's, on a volume


def _compose_redis_args() -> list[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    # ${VAR:-default} -> default: the stack's configuration when nothing is set.
    return [
        re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(a))
        for a in compose["services"]["redis"]["command"]
    ]


def test_redis_is_configured_as_in_compose_and_keeps_its_aof_on_a_volume() -> None:
    redis = one(BASE, "StatefulSet", "seqcast-redis")
    container = _container(redis["spec"]["template"]["spec"])
    args = container["args"]
    assert args == _compose_redis_args()
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    # The AOF directory is the claim's volume.
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == options["--dir"]
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == mount["name"]
    assert redis["spec"]["replicas"] == 1
    # Room for the data set and an AOF rewrite's copy-on-write; the disk for the AOF files.
    maxmemory = redis_bytes(options["--maxmemory"])
    assert quantity(container["resources"]["limits"]["memory"]) >= 2 * maxmemory
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 3 * maxmemory
    # The image's redis user owns the volume.
    context = redis["spec"]["template"]["spec"]["securityContext"]
    assert context["runAsUser"] == context["fsGroup"] == 999


# ---------------------------------------------------------------------------
# KServe


def test_the_inferenceservice_uses_the_seqcast_runtime_on_v2() -> None:
    runtime = _runtime()
    model = _predictor()["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"] in [
        {"name": f["name"], "version": f["version"]}
        for f in runtime["spec"]["supportedModelFormats"]
    ]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["protocolVersion"] == "v2"
    # KServe finds the serving container by this name.
    assert _container(runtime["spec"])["name"] == "kserve-container"
    # The format's version is the manifest's format_version of the models it serves.
    versions = {
        json.loads(p.read_text())["format_version"]
        for p in (ROOT / "models").glob("*/*/manifest.json")
    }
    assert versions == {int(model["modelFormat"]["version"])}
    assert _predictor()["scaleMetric"] == "cpu"
    assert _predictor()["minReplicas"] >= 2
