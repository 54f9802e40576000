"""Model names allowed in the repository (checked before any training starts)."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ValueError(f"model name {name!r} must match {NAME_RE.pattern}")
