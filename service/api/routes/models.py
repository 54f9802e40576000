"""What a client needs to know about the served models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.encoding import OrjsonResponse
from service.api.schemas import ErrorResponse, ModelInfo, ModelList, VersionInfo
from service.api.state import StateDep, find_in
from service.repository import LoadedModel, ModelRepository
from service.settings import Settings

router = APIRouter(prefix="/v1/models", tags=["models"])
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


def version_info(model: LoadedModel, settings: Settings) -> dict[str, Any]:
    m = model.manifest
    layers, hidden = model.state_shape
    return {
        "name": m.name,
        "version": m.version,
        "cell": m.architecture.cell,
        "features": m.client_features,
        "targets": m.targets,
        "num_layers": layers,
        "hidden_size": hidden,
        "window": m.window,
        "max_horizon": settings.max_horizon if m.can_roll_out else 1,
        "state_shape": {"h": [layers, hidden], "c": [layers, hidden] if m.is_lstm else None},
        "providers": model.providers,
        "metrics": m.metrics,
        "onnx": {"file": m.onnx.file, "sha256": m.onnx.sha256, "opset": m.onnx.opset},
        "created_at": m.training.get("created_at"),
        # Dated models: the grid and the calendar inputs the service computes itself.
        "time": None
        if m.time is None
        else {
            "freq": m.time.freq,
            "tz": m.time.tz,
            "calendar": m.time.calendar,
            "anchor": m.time.anchor,
        },
    }


def model_info(repository: ModelRepository, name: str, settings: Settings) -> dict[str, Any]:
    versions = sorted(repository.models[name])
    return {
        "name": name,
        "default_version": versions[-1],
        "versions": versions,
        "latest": version_info(repository.models[name][versions[-1]], settings),
    }


@router.get("", response_model=ModelList)
async def list_models(state: StateDep) -> OrjsonResponse:
    """Every served model with its versions and the metadata of its default version."""
    repository = state.repository  # one snapshot for the whole answer
    names = sorted(repository.models)
    return OrjsonResponse({"models": [model_info(repository, n, state.settings) for n in names]})


@router.get("/{name}", response_model=ModelInfo, responses=_NOT_FOUND)
async def get_model(name: str, state: StateDep) -> OrjsonResponse:
    """One model: its versions and the metadata of its default (highest) version."""
    repository = state.repository  # one snapshot for the whole answer
    find_in(repository, name)  # or the 404
    return OrjsonResponse(model_info(repository, name, state.settings))


@router.get("/{name}/versions/{version}", response_model=VersionInfo, responses=_NOT_FOUND)
async def get_version(name: str, version: int, state: StateDep) -> OrjsonResponse:
    """One model version: cell, features, targets, state shape, providers, test metrics."""
    return OrjsonResponse(version_info(state.find_model(name, version), state.settings))
