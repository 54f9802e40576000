"""`seqcast serve`: validate the settings, then run uvicorn on the app factory."""

from __future__ import annotations

import importlib.util
import logging
import logging.config
import os
import sys

import uvicorn
from pydantic import ValidationError

from service.settings import Settings
from service.telemetry.logs import logging_config
from service.telemetry.multiprocess import shared_metrics_dir

log = logging.getLogger(__name__)


def uvicorn_options() -> dict[str, str]:
    """The fastest event loop and HTTP parser installed (uvloop, httptools), else defaults."""
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


def run(overrides: dict[str, object]) -> int:
    """Serve with SEQCAST_ settings, `overrides` (from the command line) taking precedence."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        print(f"seqcast serve: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    # Worker processes build their own app from the environment, so the command-line
    # overrides travel to them as SEQCAST_ variables.
    for key, value in overrides.items():
        os.environ[f"SEQCAST_{key.upper()}"] = str(value)
    # The same logging here and, through uvicorn's log_config, in every worker process.
    level = settings.log_level.upper() if settings.log_level != "trace" else "DEBUG"
    log_config = logging_config(settings.log_format, level)
    logging.config.dictConfig(log_config)
    log.info(
        "serving %s on http://%s:%d with %d worker(s)",
        settings.model_dir,
        settings.host,
        settings.port,
        settings.workers,
    )
    # Several workers share their metrics through files in a fresh directory.
    with shared_metrics_dir(settings.metrics and settings.workers > 1):
        _serve(settings, log_config)
    return 0


def _serve(settings: Settings, log_config: dict[str, object]) -> None:
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        # The front door writes the access log (session ids redacted, request ids in).
        access_log=False,
        log_config=log_config,  # uvicorn's records go to the same handler
        **uvicorn_options(),  # type: ignore[arg-type]
    )
