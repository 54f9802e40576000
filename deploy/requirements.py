"""Print seqcast's dependencies from pyproject.toml, one per line, for `pip install -r`.

The images install dependencies in their own layer, before the source is copied,
so that editing the code does not reinstall them. This reads the same list that
`pip install .` would use, so the two never drift apart.

    python deploy/requirements.py                  # serving dependencies
    python deploy/requirements.py --extra train    # plus an optional extra
    python deploy/requirements.py --gpu            # onnxruntime-gpu instead of onnxruntime
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

# A requirement's distribution name: the leading run before any extra, version or marker.
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def requirements(pyproject: Path, extras: list[str], gpu: bool) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    if gpu:
        # onnxruntime and onnxruntime-gpu install the same module: exactly one may be present.
        reqs = [_to_gpu(r) for r in reqs]
    return reqs


def _to_gpu(req: str) -> str:
    match = _NAME.match(req)
    if match and match.group(1).lower() == "onnxruntime":
        return "onnxruntime-gpu" + req[match.end() :]
    return req


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("--extra", action="append", default=[], help="optional extra to add")
    parser.add_argument("--gpu", action="store_true", help="use onnxruntime-gpu")
    args = parser.parse_args(argv)
    sys.stdout.write("".join(f"{r}\n" for r in requirements(args.pyproject, args.extra, args.gpu)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
