"""`seqcast serve`: validate the settings, then run uvicorn on the app factory."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

import uvicorn
from pydantic import ValidationError

from service.redaction import LOG_FORMAT, RedactingFormatter, install_log_context
from service.settings import Settings
from service.supervisor import forward_sighup_to_workers

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
    install_log_context()
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    logging.basicConfig(
        level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG",
        handlers=[handler],
    )
    log.info(
        "serving %s on http://%s:%d with %d worker(s)",
        settings.model_dir,
        settings.host,
        settings.port,
        settings.workers,
    )
    if settings.workers > 1:
        forward_sighup_to_workers()  # SIGHUP re-scans in every worker, not a restart
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        # The front door writes the access log (session ids redacted, request ids in).
        access_log=False,
        log_config=None,  # uvicorn's records go to the handler above
        **uvicorn_options(),  # type: ignore[arg-type]
    )
    return 0
