"""Which model version the request being handled ran on, whichever way it came in.

The front door makes one RequestInfo per request and sets it in a context variable for
as long as the request is handled; the runner and the session manager note the loaded
model version they use (`note_model`). The access log, the metrics and the traces read it
when the request ends, so a label or a log field names a model version the repository
served, never a string taken from the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.repository import LoadedModel

REQUEST_INFO = "seqcast.request"  # where the front door puts the RequestInfo in the scope


@dataclass(slots=True)
class RequestInfo:
    """What the work layers noted about one request."""

    model: LoadedModel | None = None  # the model version it ran on (the last one noted)


request_info_var: ContextVar[RequestInfo | None] = ContextVar("seqcast_request", default=None)


def note_model(model: LoadedModel) -> None:
    """Note that the request being handled (if any) runs on this model version."""
    info = request_info_var.get()
    if info is not None:
        info.model = model


def request_model(scope: Mapping[str, Any], resolve: bool) -> LoadedModel | None:
    """The model version a request ran on; with `resolve`, when none was noted, the one
    its path names (a request that failed before it ran, such as a body that is not
    valid), looked up in the repository. None when unknown."""
    info: RequestInfo | None = scope.get(REQUEST_INFO)
    if info is not None and info.model is not None:
        return info.model
    if not resolve:
        return None
    params = scope.get("path_params")
    name = params.get("name") if params else None
    state = scope.get("state")
    if not isinstance(name, str) or not state:
        return None
    version: Any = params.get("version") if params else None
    if isinstance(version, str):
        if not (version.isascii() and version.isdigit()):  # "²" is a digit to isdigit()
            return None
        version = int(version)
    from service.api.state import app_state  # here: service.api imports the runner

    try:
        return app_state(scope).repository.get(name, version)
    except KeyError:  # an app whose lifespan did not run
        return None
