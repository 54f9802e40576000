"""The app's state, built by the lifespan, and the one way every route reaches it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from service.api.errors import ApiError
from service.inputs import Limits, shown
from service.reload import Reloader
from service.repository import LoadedModel, ModelRepository
from service.runner import ModelRunner
from service.sessions.manager import SessionManager
from service.settings import Settings

_KEY = "seqcast"  # where the lifespan puts AppState in the ASGI scope's state
OWNER_KEY = "seqcast.owner"  # the API key name the front door identified ("" when off)


@dataclass(frozen=True, slots=True)
class AppState:
    """Everything routes use, built once per app by the lifespan."""

    settings: Settings
    reloader: Reloader  # holds the repository snapshot; a reload swaps it (service.reload)
    runner: ModelRunner
    sessions: SessionManager
    limits: Limits

    @property
    def repository(self) -> ModelRepository:
        """The current snapshot: read it once per request and use that one throughout."""
        return self.reloader.repository

    def find_model(self, name: str, version: int | None = None) -> LoadedModel:
        """The model version asked for, or a 404 that says which part is unknown."""
        return find_in(self.reloader.repository, name, version)


def find_in(repository: ModelRepository, name: str, version: int | None = None) -> LoadedModel:
    """The model version asked for in this snapshot, or a 404 that says which part is
    unknown."""
    model = repository.get(name, version)
    if model is not None:
        return model
    if name not in repository.models:
        raise ApiError(404, "model_not_found", f"model {shown(name)!r} is not served here", "name")
    served = sorted(repository.models[name])
    raise ApiError(
        404,
        "version_not_found",
        f"model {name!r} has no version {version}; served versions: {served}",
        "version",
    )


def lifespan_state(state: AppState) -> dict[str, Any]:
    """What the lifespan yields: Starlette copies it into every request's scope."""
    return {_KEY: state}


def app_state(scope: Mapping[str, Any]) -> AppState:
    state: AppState = scope["state"][_KEY]
    return state


def owner_of(scope: Mapping[str, Any]) -> str:
    owner: str = scope.get(OWNER_KEY, "")
    return owner


# async on purpose: FastAPI runs a plain `def` dependency in its thread pool.
async def _state(connection: HTTPConnection) -> AppState:
    return app_state(connection.scope)


async def _owner(connection: HTTPConnection) -> str:
    return owner_of(connection.scope)


StateDep = Annotated[AppState, Depends(_state)]
OwnerDep = Annotated[str, Depends(_owner)]
