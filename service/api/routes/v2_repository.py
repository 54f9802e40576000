"""The Open Inference Protocol's model repository extension, behind the admin key.

    POST /v2/repository/index                 every version on disk or served, and its state
    POST /v2/repository/models/{name}/load    load (or reload) a model from the model directory
    POST /v2/repository/models/{name}/unload  stop serving it until it is loaded again

On the reload machinery of /admin (service.reload: the new set is built beside the one
that serves, then swapped in; in-flight requests finish on what they started with).
Served only when SEQCAST_ADMIN_KEYS names keys, as /admin is; a key that is not an admin
key gets 403. Models come from the model directory only: a load that carries a model
configuration or files (Triton's "config" and "file:" parameters) is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

from anyio.to_thread import run_sync
from fastapi import APIRouter, Request
from pydantic import Field

from service.api.body import read_body
from service.api.body_routes import parse_body
from service.api.encoding import OrjsonResponse
from service.api.errors import ApiError
from service.api.routes.admin import AdminDep, report_json
from service.api.schemas import StrictModel
from service.api.state import AppState
from service.inputs import shown
from service.oip.schemas import Parameters
from service.reload import ReloadReport
from service.repository import LoadFailure, ModelRepository, VersionDir, scan
from service.settings import Settings
from service.supervisor import signal_other_workers
from training.manifest import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)
_Body = TypeVar("_Body", bound=StrictModel)

router = APIRouter(prefix="/v2/repository", tags=["v2"], include_in_schema=False)


class IndexRequest(StrictModel):
    ready: bool = Field(False, strict=True, description="only the versions ready to serve")


class LoadRequest(StrictModel):
    parameters: Parameters | None = None


async def _parsed(kind: type[_Body], request: Request, state: AppState) -> _Body:
    """The request's JSON body (optional: tritonclient sends none for the index)."""
    body = await read_body(request.receive, state.settings.max_body_bytes)
    return parse_body(kind, body, empty_ok=True)


@router.post("/index")
async def index(request: Request, state: AdminDep) -> OrjsonResponse:
    """Every model version in the model directory or served, with its state and reason."""
    body = await _parsed(IndexRequest, request, state)
    found, misnamed = await run_sync(scan, state.settings.model_dir)
    return OrjsonResponse(
        _index(state.repository, found, misnamed, state.reloader.unloaded_names, body.ready)
    )


def _index(
    repository: ModelRepository,
    found: list[VersionDir],
    misnamed: list[LoadFailure],
    unloaded: list[str],
    ready_only: bool,
) -> list[dict[str, str]]:
    entries: dict[str, dict[str, str]] = {}
    for name, versions in repository.models.items():
        for version in versions:
            entries[f"{name}/{version}"] = _entry(name, str(version), "READY", "")
    for failure in [*repository.failures, *misnamed]:
        if failure.model not in entries:
            model, _, number = failure.model.partition("/")
            entries[failure.model] = _entry(model, number, "UNAVAILABLE", failure.reason)
    for version_dir in found:
        if version_dir.key not in entries:
            reason = (
                "unloaded on request"
                if version_dir.name in unloaded
                else "not loaded yet: load the model or re-scan the repository"
            )
            entries[version_dir.key] = _entry(
                version_dir.name, str(version_dir.version), "UNAVAILABLE", reason
            )
    listed = [entries[key] for key in sorted(entries)]
    return [e for e in listed if e["state"] == "READY"] if ready_only else listed


def _entry(name: str, version: str, state: str, reason: str) -> dict[str, str]:
    entry = {"name": name, "state": state, "reason": reason}
    if version:
        entry["version"] = version
    return entry


def _on_disk(model_dir: Path, name: str) -> bool:
    return _NAME.match(name) is not None and (model_dir / name).is_dir()


@router.post("/models/{name}/load")
async def load(name: str, request: Request, state: AdminDep) -> OrjsonResponse:
    """Load (or reload) every version of a model from the model directory."""
    body = await _parsed(LoadRequest, request, state)
    for key in body.parameters or {}:
        if key == "config" or key.startswith("file:"):
            raise ApiError(
                400,
                "not_supported",
                f"the load parameter {shown(key)!r} is not supported: seqcast loads models "
                "from its model directory (SEQCAST_MODEL_DIR) only",
                f"parameters.{shown(key)}",
            )
        raise ApiError(
            400,
            "unknown_field",
            f"unknown load parameter {shown(key)!r}",
            f"parameters.{shown(key)}",
        )
    if not await run_sync(_on_disk, state.settings.model_dir, name):
        raise ApiError(
            404,
            "model_not_found",
            f"model {shown(name)!r} is not in the model repository",
            "name",
        )
    report = await state.reloader.aload(name)
    if state.repository.get(name) is None:
        reasons = [
            f"{f.model}: {f.reason}" for f in report.failures if f.model.startswith(name + "/")
        ]
        raise ApiError(
            400,
            "load_failed",
            f"model {name!r} did not load: " + ("; ".join(reasons) or "it has no versions"),
            "name",
        )
    # The other workers of this server (if any) re-scan on the supervisor's SIGHUP.
    return OrjsonResponse(
        {**report_json(report), "other_workers_signalled": signal_other_workers()}
    )


@router.post("/models/{name}/unload")
async def unload(name: str, request: Request, state: AdminDep) -> OrjsonResponse:
    """Stop serving every version of a model until it is loaded again."""
    body = await _parsed(LoadRequest, request, state)
    for key in body.parameters or {}:
        if key != "unload_dependents":  # seqcast's models have none: nothing to do
            raise ApiError(
                400,
                "unknown_field",
                f"unknown unload parameter {shown(key)!r}",
                f"parameters.{shown(key)}",
            )
    if state.settings.workers > 1:
        raise ApiError(
            400,
            "not_supported",
            f"unload acts on one worker process, and this server runs {state.settings.workers} "
            "(SEQCAST_WORKERS): the others would go on serving the model. Run one worker per "
            "replica, or remove the model's directory and POST /admin/reload",
            "name",
        )
    if state.repository.get(name) is None and not await run_sync(
        _on_disk, state.settings.model_dir, name
    ):
        raise ApiError(404, "model_not_found", f"model {shown(name)!r} is not served here", "name")
    report: ReloadReport = await state.reloader.aunload(name)
    return OrjsonResponse(report_json(report))


def repository_router(settings: Settings) -> APIRouter | None:
    """The routes when admin keys are configured (service.api.routes.admin checks them)."""
    return router if settings.admin_key_names else None
