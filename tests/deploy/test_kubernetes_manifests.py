"""deploy/kubernetes validates offline: Kubernetes' JSON schemas (kubernetes-validate) for
the built-in kinds, KServe's vendored CRD schemas for its custom resources.

No cluster is needed or reached. Unknown fields are errors, as with kubectl's default
strict field validation, so a misspelt field fails here rather than being dropped by the
API server. tests/deploy/test_kubernetes_consistency.py checks the manifests against the
code (settings, probe paths, ports).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.kube import (
    K8S,
    KSERVE_SCHEMAS,
    KUBERNETES_VERSIONS,
    Manifest,
    kustomization,
    objects,
    one,
    validate,
)

KUSTOMIZATIONS = [K8S, K8S / "kserve", K8S / "redis"]
ALL = sorted(
    {(m.path, m.kind, m.name): m for d in KUSTOMIZATIONS for m in objects(d)}.values(),
    key=lambda m: (str(m.path), m.kind, m.name),
)


def _id(m: Manifest) -> str:
    return f"{m.path.relative_to(K8S)}:{m.kind}/{m.name}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", ALL, ids=_id)
def test_every_object_validates(manifest: Manifest, version: str) -> None:
    try:
        validate(manifest.obj, version)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path)
        pytest.fail(
            f"{_id(manifest)} is invalid for Kubernetes {version} at {where}: {exc.message}"
            " (for a KServe field cut when its schema was vendored, see the header of "
            f"{KSERVE_SCHEMAS.relative_to(K8S.parents[1])}/*.schema.yaml)"
        )


def test_the_kustomizations_hold_what_is_expected() -> None:
    kinds = sorted(m.kind for m in objects(K8S))
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "StatefulSet",
            "Service",
            "NetworkPolicy",
        ]
    )
    assert sorted(m.kind for m in objects(K8S / "kserve")) == sorted(
        ["ServingRuntime", "InferenceService", "StatefulSet", "Service", "NetworkPolicy"]
    )
    # API keys come from the user's Secret: none is committed.
    assert not [m for d in KUSTOMIZATIONS for m in objects(d) if m.kind == "Secret"]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(K8S)))
def test_each_kustomization_lists_every_manifest_beside_it(directory: Path) -> None:
    listed = kustomization(directory)["resources"]
    files = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert {r for r in listed if not (directory / r).is_dir()} == files
    for entry in listed:
        assert (directory / entry).exists(), entry
        if (directory / entry).is_dir():
            assert (directory / entry / "kustomization.yaml").is_file()
    # Nothing outside deploy/kubernetes is pulled in.
    for m in objects(directory):
        assert m.path.is_relative_to(K8S)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda d: str(d.relative_to(K8S)))
def test_kustomize_builds_exactly_these_objects(directory: Path) -> None:
    # kubectl's built-in kustomize, where kubectl is installed (no cluster is needed).
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    built = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(built)}
    assert by_name == {(m.kind, m.name): m.obj for m in objects(directory)}


def test_names_are_unique_per_kind() -> None:
    for directory in KUSTOMIZATIONS:
        keys = [(m.kind, m.name) for m in objects(directory)]
        assert len(keys) == len(set(keys)), directory


# ---------------------------------------------------------------------------
# The validator has teeth: a broken copy of each manifest is refused.

_GONE = object()

# (kind, dotted path into the object, new value or _GONE to delete it): each is a
# mistake kubectl apply would refuse.
BROKEN: list[tuple[str, str, Any]] = [
    ("Deployment", "spec.template.spec.containers.0.livenessprobe", {}),
    ("Deployment", "spec.template.spec.containers.0.ports.0.containerPort", "8000"),
    ("Deployment", "spec.selector", _GONE),
    ("Deployment", "spec.template.spec.containers.0.resources.limit", {}),
    ("Service", "spec.ports.0.port", "eighty"),
    ("HorizontalPodAutoscaler", "spec.scaleTargetRef", _GONE),
    ("HorizontalPodAutoscaler", "spec.metrics.0.resource.target.averageUtilization", "70%"),
    ("PodDisruptionBudget", "spec.maxUnavailable", [1]),
    ("StatefulSet", "spec.volumeClaimTemplates.0.spec.accessModes", "ReadWriteOnce"),
    ("StatefulSet", "spec.serviceName", 6379),
    ("NetworkPolicy", "spec.podSelector", "redis"),
    ("ConfigMap", "data.SEQCAST_PORT", 8000),
    ("ServingRuntime", "spec.protocolVersions", "v2"),
    ("ServingRuntime", "spec.supportedModelFormats.0.name", _GONE),
    ("ServingRuntime", "spec.containers.0.envv", []),
    ("ServingRuntime", "spec.containers", _GONE),
    ("ServingRuntime", "metadata.labelz", {}),
    ("InferenceService", "spec.predictor.scaleMetric", "gpu"),
    ("InferenceService", "spec.predictor.minReplicas", "2"),
    ("InferenceService", "spec.predictor.model.modelformat", {"name": "seqcast-onnx"}),
    ("InferenceService", "spec.predictor", _GONE),
    # A field cut when the schema was vendored is refused too, not waved through.
    ("InferenceService", "spec.predictor.sklearn", {}),
]


def _broken(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copied = copy.deepcopy(obj)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = copied
    for step in parents:
        node = node[step]
    if value is _GONE:
        del node[last]
    else:
        node[last] = value
    return copied


@pytest.mark.parametrize(("kind", "path", "value"), BROKEN, ids=[f"{k}:{p}" for k, p, _ in BROKEN])
def test_a_broken_copy_is_refused(kind: str, path: str, value: Any) -> None:
    manifests = objects(K8S) + objects(K8S / "kserve")
    obj = next(m.obj for m in manifests if m.kind == kind)
    for version in KUBERNETES_VERSIONS:
        validate(obj, version)  # the original passes ...
        with pytest.raises(jsonschema.ValidationError):  # ... the broken copy does not
            validate(_broken(obj, path, value), version)


def test_an_object_of_a_kind_with_no_schema_is_refused() -> None:
    runtime = one(objects(K8S / "kserve"), "ServingRuntime")
    # A typo in apiVersion or kind must not skip validation silently.
    wrong = {**runtime, "apiVersion": "serving.kserve.io/v1"}
    with pytest.raises(LookupError, match=r"no schema for serving\.kserve\.io/v1 ServingRuntime"):
        validate(wrong, KUBERNETES_VERSIONS[-1])
