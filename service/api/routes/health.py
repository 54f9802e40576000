"""Liveness and readiness."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter

from service.api.encoding import OrjsonResponse
from service.api.state import StateDep

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> OrjsonResponse:
    """Alive: the process answers HTTP."""
    return OrjsonResponse({"status": "ok"})


@router.get(
    "/readyz",
    responses={503: {"description": "a model version failed to load, or the store is down"}},
)
async def readyz(state: StateDep) -> OrjsonResponse:
    """Ready: 200 when every discovered model version loaded and the session store answers."""
    repository = state.repository
    store_ok = True
    if state.settings.ready_needs_store:
        store_ok = await state.sessions.store.ping()
    loaded = [f"{name}/{v}" for name, versions in repository.models.items() for v in versions]
    body: dict[str, Any] = {
        "status": "ready",
        "models": sorted(loaded),
        # Names and reasons only: file paths are for the operator's log, not for clients.
        "failures": [{"model": f.model, "reason": f.reason} for f in repository.failures],
        "session_store": (
            ("ok" if store_ok else "unreachable")
            if state.settings.ready_needs_store
            else "not checked"
        ),
    }
    if repository.failures or not loaded or not store_ok:
        body["status"] = "not_ready"
        if not loaded and not repository.failures:
            body["failures"] = [{"model": None, "reason": "the model repository holds no models"}]
        return OrjsonResponse(body, status_code=503)
    return OrjsonResponse(body)
