"""API keys: read from settings, kept as sha256 digests, checked in constant time.

An entry is `name:secret` or `name:sha256:<64 hex>` (the digest of the secret),
comma-separated in SEQCAST_API_KEYS or one per line in SEQCAST_API_KEYS_FILE.
The name identifies the key in logs and owns the sessions the key creates; the
secret is never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from service.redaction import add_secret

_SHA256 = hashlib.sha256()
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
MIN_SECRET_LENGTH = 16
# A browser cannot set headers on a WebSocket; it offers this subprotocol instead:
# new WebSocket(url, ["seqcast", "seqcast.key." + key]).
WS_KEY_PROTOCOL = "seqcast.key."


class KeyConfigError(ValueError):
    """The key settings cannot be used; the message says which entry and why."""


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """The configured keys as (name, sha256 digest) pairs; empty when auth is off."""

    entries: tuple[tuple[str, bytes], ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def identify(self, presented: bytes) -> str | None:
        """The name of the key `presented` is, or None; time independent of which."""
        # A copy of an empty sha256 skips OpenSSL's per-call algorithm lookup.
        hasher = _SHA256.copy()
        hasher.update(presented)
        digest = hasher.digest()
        found: str | None = None
        for name, stored in self.entries:
            # Every entry is compared, with no early exit.
            if hmac.compare_digest(digest, stored) and found is None:
                found = name
        return found


def load_keys(inline: str, file: Path | None) -> ApiKeys:
    """The keys of SEQCAST_API_KEYS and SEQCAST_API_KEYS_FILE together."""
    lines: list[tuple[str, str]] = [
        ("SEQCAST_API_KEYS", part) for part in inline.split(",") if part.strip()
    ]
    if file is not None:
        try:
            text = file.read_text()
        except OSError as exc:
            raise KeyConfigError(
                f"cannot read SEQCAST_API_KEYS_FILE {file}: {exc.strerror}"
            ) from exc
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append((f"{file}:{number}", line))
    entries: list[tuple[str, bytes]] = []
    names: set[str] = set()
    for where, entry in lines:
        name, sep, secret = entry.strip().partition(":")
        if not sep or not _NAME.match(name):
            raise KeyConfigError(
                f"{where}: an entry must be name:secret or name:sha256:<hex>, with a name of "
                "letters, digits, '.', '_' or '-' (the secret is not shown)"
            )
        if name in names:
            raise KeyConfigError(f"{where}: key name {name!r} is given twice")
        names.add(name)
        digest = _DIGEST.match(secret)
        if digest is not None:
            entries.append((name, bytes.fromhex(digest.group(1))))
            continue
        if len(secret) < MIN_SECRET_LENGTH:
            raise KeyConfigError(
                f"{where}: the secret of key {name!r} is shorter than {MIN_SECRET_LENGTH} "
                "characters"
            )
        add_secret(secret)
        entries.append((name, hashlib.sha256(secret.encode()).digest()))
    return ApiKeys(tuple(entries))
