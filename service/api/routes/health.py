"""Liveness and readiness."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter

from service.api.encoding import OrjsonResponse
from service.api.state import AppState, StateDep
from service.repository import LoadFailure

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> OrjsonResponse:
    """Alive: the process answers HTTP."""
    return OrjsonResponse({"status": "ok"})


@router.get(
    "/readyz",
    responses={
        503: {
            "description": "a model version failed to load at start-up, no model is served, "
            "or the session store is down"
        }
    },
)
async def readyz(state: StateDep) -> OrjsonResponse:
    """Ready: 200 when every version found at start-up loaded (or loads since), some model
    is served and the session store answers; a version that breaks later is listed only."""
    ready, body = await readiness(state)
    return OrjsonResponse(body, status_code=200 if ready else 503)


async def readiness(state: AppState) -> tuple[bool, dict[str, Any]]:
    """Whether this server is ready (the rule above), and what /readyz says about it."""
    repository = state.repository  # one snapshot for the whole answer
    store_ok = True
    if state.settings.ready_needs_store:
        store_ok = await state.sessions.store.ping()
    loaded = [f"{name}/{v}" for name, versions in repository.models.items() for v in versions]
    body: dict[str, Any] = {
        "status": "ready",
        "models": sorted(loaded),
        # Names and reasons only: file paths are for the operator's log, not for clients.
        "failures": [failure_json(f) for f in repository.failures],
        "session_store": (
            ("ok" if store_ok else "unreachable")
            if state.settings.ready_needs_store
            else "not checked"
        ),
    }
    # A version broken at start-up is a bad deploy: keep this replica out of rotation. One
    # that a re-scan finds broken must not take every replica out at once: it is listed.
    blocking = any(f.at_start for f in repository.failures)
    if blocking or not loaded or not store_ok:
        body["status"] = "not_ready"
        if not loaded and not repository.failures:
            body["failures"] = [{"model": None, "reason": "the model repository holds no models"}]
        return False, body
    return True, body


def failure_json(failure: LoadFailure) -> dict[str, Any]:
    """A load failure as clients see it: never its path."""
    return {
        "model": failure.model,
        "reason": failure.reason,
        # "start-up": found by the load at start (/readyz answers 503 until it loads);
        # "reload": found by a later re-scan (listed, readiness unchanged).
        "found": "start-up" if failure.at_start else "reload",
        # An earlier load of this version still serves.
        "serving": failure.serving,
    }
