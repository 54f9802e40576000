"""deploy/kubernetes as the tests see it: the objects each kustomization applies, and an
offline validator for them (Kubernetes' own schemas, KServe's vendored CRD schemas)."""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import all_versions, major_minor
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KSERVE_SCHEMAS = Path(__file__).resolve().parent / "kserve"

# The oldest Kubernetes the manifests are checked against, and the newest schemas the
# installed kubernetes-validate carries.
OLDEST_KUBERNETES = "1.30"
KUBERNETES_VERSIONS = [OLDEST_KUBERNETES, kubernetes_validate.latest_version()]

# Custom resources: (apiVersion, kind) -> the vendored schema (tests/deploy/kserve).
CUSTOM = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime-v1alpha1.schema.yaml",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-v1beta1.schema.yaml",
}


@dataclass(frozen=True)
class Manifest:
    """One object of a kustomization, with the file it is in."""

    path: Path
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        kind: str = self.obj["kind"]
        return kind

    @property
    def name(self) -> str:
        name: str = self.obj["metadata"]["name"]
        return name


def kustomization(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return data


def objects(directory: Path) -> list[Manifest]:
    """What `kubectl apply -k directory` applies: its resources, directories followed."""
    found: list[Manifest] = []
    for entry in kustomization(directory)["resources"]:
        path = (directory / entry).resolve()
        if path.is_dir():
            found.extend(objects(path))
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append(Manifest(path, doc))
    return found


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> dict[str, Any]:
    """The only object of `kind` (and `name`) in `manifests`."""
    hits = [m.obj for m in manifests if m.kind == kind and name in (None, m.name)]
    assert len(hits) == 1, f"{len(hits)} objects of kind {kind} named {name}"
    return hits[0]


# ---------------------------------------------------------------------------
# validation


def validate(obj: dict[str, Any], version: str) -> None:
    """Raise jsonschema.ValidationError unless the API server of `version` would accept
    `obj` with kubectl's default strict field validation (unknown fields are errors);
    LookupError when no schema knows its apiVersion and kind."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CUSTOM:
        _custom_validator(CUSTOM[key]).validate(obj)  # type: ignore[index]
        # A custom resource's metadata is an ObjectMeta as any object's: check it as
        # a ConfigMap's.
        meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata")}
        _core_validator(version, "v1", "ConfigMap").validate(meta)
        return
    _core_validator(version, str(key[0]), str(key[1])).validate(obj)


@functools.cache
def _core_validator(version: str, api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """kubernetes-validate's strict schema of a built-in kind, as its validate() picks it
    (the newest schemas not newer than `version`), built once."""
    wanted = _minor(version)
    chosen = [v for v in all_versions() if _minor(v) <= wanted][-1]
    directory = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{chosen}-local-strict"
    # rbac.authorization.k8s.io/v1 -> rbac-v1, as kubernetes-validate names its files.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = directory / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        raise LookupError(f"no schema for {api_version} {kind} in Kubernetes {chosen}")
    schema = json.loads(path.read_text())
    definitions = json.loads((directory / "_definitions.json").read_text())
    registry: Registry[Any] = Resource.from_contents(definitions) @ (
        Resource.from_contents(schema) @ Registry()
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _minor(version: str) -> tuple[int, ...]:
    """The (major, minor) of "1.30" or "1.30.0"."""
    return tuple(int(part) for part in major_minor(version).split("."))


@functools.cache
def _custom_validator(filename: str) -> jsonschema.protocols.Validator:
    schema = yaml.load((KSERVE_SCHEMAS / filename).read_text(), Loader=_Loader)
    strict = _strict(copy.deepcopy(schema))
    cls = jsonschema.validators.validator_for(strict, default=jsonschema.Draft202012Validator)
    cls.check_schema(strict)
    validator: jsonschema.protocols.Validator = cls(strict)
    return validator


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _strict(node: Any) -> Any:
    """The schema with unknown fields refused, as the API server's strict field validation
    does (kubectl's default since Kubernetes 1.27): every object schema that lists its
    properties and neither allows others nor preserves unknown fields."""
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


# ---------------------------------------------------------------------------
# quantities


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity(value: str | int) -> float:
    """A Kubernetes quantity ("512Mi", "500m", "2") as a number (bytes, cores)."""
    text = str(value)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|m|k|M|G|T)?", text)
    assert match, f"not a quantity: {text!r}"
    number, suffix = float(match.group(1)), match.group(2) or ""
    if suffix == "m":
        return number / 1000
    return number * (_BINARY.get(suffix) or _DECIMAL[suffix])


def redis_bytes(value: str) -> int:
    """A size in redis.conf's units: 1k = 1000 bytes, 1kb = 1024 bytes (and so on)."""
    match = re.fullmatch(r"(\d+)(k|kb|m|mb|g|gb)?", value.lower())
    assert match, f"not a Redis size: {value!r}"
    unit = match.group(2) or ""
    scale = {"": 1, "k": 10**3, "kb": 2**10, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}
    return int(match.group(1)) * scale[unit]
