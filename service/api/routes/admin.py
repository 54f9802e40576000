"""Operator endpoints: re-scan the model repository, and see what this worker serves.

Served only when SEQCAST_ADMIN_KEYS names at least one API key (else every /admin path
is 404, as for a path that does not exist). A request without a valid key gets the front
door's 401; one with a key that is not an admin key gets 403.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.requests import HTTPConnection

from service.api.auth import ApiKeys, KeyConfigError
from service.api.encoding import OrjsonResponse
from service.api.errors import ApiError
from service.api.routes.health import failure_json
from service.api.schemas import ErrorResponse
from service.api.state import AppState, app_state, owner_of
from service.reload import ReloadReport, served
from service.settings import Settings
from service.supervisor import signal_other_workers


async def _admin(connection: HTTPConnection) -> AppState:
    state = app_state(connection.scope)
    if owner_of(connection.scope) not in state.settings.admin_key_names:
        raise ApiError(
            403,
            "admin_key_required",
            "this endpoint needs an admin key: a key named in SEQCAST_ADMIN_KEYS",
            "Authorization",
        )
    return state


AdminDep = Annotated[AppState, Depends(_admin)]

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    responses={403: {"model": ErrorResponse, "description": "the key is not an admin key"}},
)


@router.post("/reload")
async def reload(state: AdminDep) -> OrjsonResponse:
    """Re-scan the model directory: load new and changed versions, drop removed ones."""
    report = await state.reloader.arescan()
    # The other workers of this server (if any) re-scan on the supervisor's SIGHUP.
    others = signal_other_workers()
    return OrjsonResponse({**report_json(report), "other_workers_signalled": others})


@router.get("/repository")
async def repository(state: AdminDep) -> OrjsonResponse:
    """What this worker serves: every version with its default, and every failure."""
    reloader = state.reloader
    snapshot = reloader.repository
    return OrjsonResponse(
        {
            "worker": os.getpid(),
            "generation": reloader.generation,
            "models": served(snapshot),
            "defaults": {name: max(versions) for name, versions in sorted(snapshot.models.items())},
            "failures": [failure_json(f) for f in snapshot.failures],
            "unloaded_on_request": reloader.unloaded_names,
        }
    )


def report_json(report: ReloadReport) -> dict[str, Any]:
    return {
        "worker": os.getpid(),
        "generation": report.generation,
        "loaded": report.loaded,
        "reloaded": report.reloaded,
        "unloaded": report.unloaded,
        "failures": [failure_json(f) for f in report.failures],
        "models": report.models,
    }


def admin_router(settings: Settings, keys: ApiKeys) -> APIRouter | None:
    """The /admin routes when admin keys are configured; KeyConfigError for a name that
    is not one of the API keys."""
    names = settings.admin_key_names
    if not names:
        return None
    known = {name for name, _ in keys.entries}
    unknown = sorted(names - known)
    if unknown:
        raise KeyConfigError(
            f"SEQCAST_ADMIN_KEYS names {unknown}, which SEQCAST_API_KEYS does not define"
            + ("" if known else " (no API keys are configured)")
        )
    return router
