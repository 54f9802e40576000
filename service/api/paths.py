"""Paths with a fixed meaning outside the API's own routes, known to more than one module."""

from __future__ import annotations

STATIC_PREFIX = "/static/swagger-ui"  # Swagger UI's assets, served from swagger-ui-bundle

# What each SEQCAST_AUTH_EXEMPT group opens: exact paths, and path prefixes.
_EXEMPT: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "health": (("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"), ()),
    "docs": (("/docs", "/openapi.json"), (STATIC_PREFIX + "/",)),
    "metrics": (("/metrics",), ()),
}


def exempt_paths(groups: frozenset[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """(exact paths, path prefixes) that need no API key for these groups."""
    exact = frozenset(path for group in groups for path in _EXEMPT[group][0])
    prefixes = tuple(prefix for group in groups for prefix in _EXEMPT[group][1])
    return exact, prefixes
