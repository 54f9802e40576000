"""Request dependencies: the model repository and settings held by the app's lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.errors import ApiError
from service.repository import LoadedModel, ModelRepository
from service.runner import ModelRunner
from service.settings import Settings


# async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a hop
# that costs more than the whole lookup.
async def get_repository(request: Request) -> ModelRepository:
    repository: ModelRepository = request.state.repository
    return repository


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


async def get_runner(request: Request) -> ModelRunner:
    runner: ModelRunner = request.state.runner
    return runner


RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RunnerDep = Annotated[ModelRunner, Depends(get_runner)]


def find_model(repository: ModelRepository, name: str, version: int | None = None) -> LoadedModel:
    """The model version asked for, or a 404 that says which part is unknown."""
    model = repository.get(name, version)
    if model is not None:
        return model
    if name not in repository.models:
        raise ApiError(404, "model_not_found", f"model {name!r} is not served here", "name")
    served = sorted(repository.models[name])
    raise ApiError(
        404,
        "version_not_found",
        f"model {name!r} has no version {version}; served versions: {served}",
        "version",
    )
