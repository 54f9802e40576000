"""Vendor KServe's CRD schemas that tests/deploy validates deploy/kubernetes/kserve against.

The test suite runs offline, so the openAPIV3Schema of the two custom resources seqcast
uses is kept in tests/deploy/kserve/. This writes them from KServe's own CRD files:

    git clone --depth 1 --branch v0.20.0 https://github.com/kserve/kserve /tmp/kserve
    .venv/bin/python -m tests.deploy.vendor_kserve_schemas /tmp/kserve/config/crd/full \\
        --release v0.20.0 --commit "$(git -C /tmp/kserve rev-parse HEAD)"

Subtrees seqcast's manifests do not use (other predictor frameworks, transformers,
explainers, multi-node workers, the status) are cut, which takes the InferenceService
schema from 640 kB of JSON to about 60 kB. A manifest that uses a cut field fails the
test with a message that points here: vendor again with that field kept in PRUNED.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parent / "kserve"

# (kind, version, CRD file) of the custom resources seqcast ships.
CRDS = [
    ("ServingRuntime", "v1alpha1", "serving.kserve.io_servingruntimes.yaml"),
    ("InferenceService", "v1beta1", "serving.kserve.io_inferenceservices.yaml"),
]

_FRAMEWORKS = [
    "huggingface",
    "lightgbm",
    "onnx",
    "paddle",
    "pmml",
    "pytorch",
    "sklearn",
    "tensorflow",
    "triton",
    "xgboost",
]
# Paths (from the schema's root, through `properties`) cut from each kind's schema.
PRUNED: dict[str, list[tuple[str, ...]]] = {
    "ServingRuntime": [("spec", "workerSpec")],
    "InferenceService": [
        ("spec", "canary"),
        ("spec", "explainer"),
        ("spec", "transformer"),
        ("spec", "predictor", "workerSpec"),
        *[("spec", "predictor", name) for name in _FRAMEWORKS],
    ],
}
# Replaced by an open object rather than cut: a manifest has no status.
OPENED: list[tuple[str, ...]] = [("status",)]

LICENCE_NOTE = """\
# Vendored from KServe {release} (commit {commit}):
# the openAPIV3Schema of {kind} {version} in {path}.
# Copyright The KServe Authors, licensed under the Apache License 2.0 (the LICENSE
# file beside this one).
# Changed from the original: the subtrees below were cut (seqcast's manifests do not
# use them; a manifest that does fails tests/deploy/test_kubernetes_manifests.py) and
# the status was replaced by an open object. Written by tests/deploy/vendor_kserve_schemas.py.
{pruned}
"""


def schema_of(crd: dict[str, Any], version: str) -> dict[str, Any]:
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            if not entry.get("served", False):
                raise SystemExit(f"{crd['metadata']['name']}: version {version} is not served")
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise SystemExit(f"{crd['metadata']['name']} has no version {version}")


def _parent(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = schema
    for name in path[:-1]:
        node = node["properties"][name]
    props: dict[str, Any] = node["properties"]
    if path[-1] not in props:
        raise SystemExit(f"no field {'.'.join(path)} in the schema: update PRUNED")
    return props


def prune(kind: str, schema: dict[str, Any]) -> dict[str, Any]:
    for path in PRUNED[kind]:
        del _parent(schema, path)[path[-1]]
    for path in OPENED:
        _parent(schema, path)[path[-1]] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
    return schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd_dir", type=Path, help="KServe's config/crd/full directory")
    parser.add_argument("--release", required=True, help="the KServe release tag, e.g. v0.20.0")
    parser.add_argument("--commit", required=True, help="the commit of that checkout")
    args = parser.parse_args(argv)
    for kind, version, filename in CRDS:
        crd = yaml.safe_load((args.crd_dir / filename).read_text())
        schema = prune(kind, schema_of(crd, version))
        header = LICENCE_NOTE.format(
            release=args.release,
            commit=args.commit,
            path=f"config/crd/full/{filename}",
            kind=kind,
            version=version,
            pruned="\n".join(f"#   cut: {'.'.join(p)}" for p in PRUNED[kind]),
        )
        out = OUT / f"{kind.lower()}-{version}.schema.yaml"
        body = yaml.safe_dump(schema, sort_keys=True, default_flow_style=False, width=100)
        out.write_text(header + body)
        print(f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
