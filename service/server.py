"""`seqcast serve`: validate the settings, then run uvicorn on the app factory.

uvicorn runs with seqcast's HTTP protocol (service.http_protocol: header and body read
timeouts, a connection cap) and its keep-alive and graceful-shutdown timeouts. On
SIGTERM or SIGINT the server stops accepting, lets in-flight requests finish for up to
`shutdown_timeout_s`, cancels the rest, and the process exits 0. (uvicorn's own Server
re-raises the signal after its shutdown, so that an embedding program sees it; as the
whole program, seqcast exits 0 instead, in a container or not.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import logging.config
import os
import resource
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from pydantic import ValidationError
from uvicorn.config import STARTUP_FAILURE
from uvicorn.server import HANDLED_SIGNALS

from service.http_protocol import BoundsConfig
from service.settings import Settings
from service.supervisor import ForwardingSupervisor, mark_supervisor
from service.telemetry.logs import logging_config
from service.telemetry.multiprocess import shared_metrics_dir

log = logging.getLogger(__name__)

# File descriptors a worker needs besides its connections: models, logs, Redis, pipes.
_SPARE_FDS = 256


def uvicorn_options() -> dict[str, str]:
    """The fastest event loop installed (uvloop), else asyncio."""
    return {"loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"}


class Server(uvicorn.Server):
    """uvicorn's Server, except that a signal that stopped it is not raised again."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def server_config(settings: Settings, log_config: dict[str, Any] | None = None) -> BoundsConfig:
    """The uvicorn configuration `seqcast serve` runs with (`log_config`: for every worker)."""
    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "log_level": settings.log_level,
        # The front door writes the access log (session ids redacted, request ids in).
        "access_log": False,
        "log_config": log_config,  # uvicorn's records (and workers') go to seqcast's handler
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        **uvicorn_options(),
    }
    return BoundsConfig(
        "service.app:create_app",
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        shutdown_timeout_s=settings.shutdown_timeout_s,
        max_connections=settings.max_connections,
        **options,
    )


def _enough_file_descriptors(settings: Settings) -> None:
    """Raise the soft descriptor limit to what max_connections needs, within the hard one."""
    want = settings.max_connections + _SPARE_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        if raised < want:
            log.warning(
                "max_connections=%d needs %d file descriptors; the limit is %d "
                "(ulimit -n): accepting may fail before max_connections is reached",
                settings.max_connections,
                want,
                raised,
            )


def _app_accepts(settings: Settings) -> bool:
    """Build the app once here (models load later, in each worker's lifespan): a setting
    it refuses, such as an admin key that names no key, would otherwise make every
    worker fail as it starts and be started again, for ever."""
    from service.app import create_app  # the app, only when workers build their own

    try:
        create_app(settings)
    except Exception as exc:
        print(f"seqcast serve: {exc}", file=sys.stderr)
        return False
    return True


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
    if settings.workers > 1 and not _app_accepts(settings):
        return 2
    _enough_file_descriptors(settings)
    config = server_config(settings, log_config)
    # Several workers share their metrics through files in a fresh directory.
    with shared_metrics_dir(settings.metrics and settings.workers > 1):
        if settings.workers > 1:
            # The parent process exits 0 once every worker has ended (each has shut down
            # within shutdown_timeout_s), or as a worker that failed to start did.
            # SIGHUP re-scans in every worker, not a restart.
            mark_supervisor()
            supervisor = ForwardingSupervisor(config, sockets=[config.bind_socket()])
            supervisor.run()
            failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
            return STARTUP_FAILURE if failed else 0
        server = Server(config)
        server.run()
    return 0 if server.started else STARTUP_FAILURE
