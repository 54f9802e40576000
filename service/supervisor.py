"""SIGHUP re-scans the model repository, in one process or in every worker of several.

One process (SEQCAST_WORKERS=1): the lifespan catches SIGHUP and re-scans.

Several workers: uvicorn's supervisor answers SIGHUP by restarting every worker, which
reloads every model in every worker. `seqcast serve` runs a supervisor that instead
forwards SIGHUP to each worker, and each re-scans as above. A worker that took POST
/admin/reload sends SIGHUP to that supervisor after its own re-scan, so the other
workers re-scan too: every worker converges to what the directory holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable

from uvicorn.supervisors.multiprocess import Multiprocess

log = logging.getLogger(__name__)

# Set by `seqcast serve` in the supervisor's environment, which its workers inherit: the
# supervisor's pid, so that a worker signals only a supervisor that forwards.
SUPERVISOR_ENV = "_SEQCAST_SUPERVISOR_PID"


class ForwardingSupervisor(Multiprocess):
    """uvicorn's worker supervisor, with SIGHUP forwarded to the workers (no restart)."""

    def handle_hup(self) -> None:
        log.info("received SIGHUP: every worker re-scans the model repository")
        for process in self.processes:
            pid = process.pid
            if pid is not None and process.process.is_alive():
                # A worker still starting dies of it and is started again, which also
                # reads the repository afresh.
                os.kill(pid, signal.SIGHUP)


def mark_supervisor() -> None:
    """Tell the workers this process starts that their supervisor forwards SIGHUP."""
    os.environ[SUPERVISOR_ENV] = str(os.getpid())


def signal_other_workers() -> bool:
    """In a worker of `seqcast serve`, ask the supervisor to make every worker re-scan;
    False (nothing sent) in a process that has no such supervisor."""
    parent = os.getppid()
    if os.environ.get(SUPERVISOR_ENV) != str(parent):
        return False
    os.kill(parent, signal.SIGHUP)
    return True


def on_sighup(loop: asyncio.AbstractEventLoop, reload: Callable[[], None]) -> Callable[[], None]:
    """Call `reload` on the loop at each SIGHUP; returns what puts the old handler back.

    Only the main thread can set signal handlers; elsewhere (a test client running the
    app on its own thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: object) -> None:
        loop.call_soon_threadsafe(reload)

    previous = signal.signal(signal.SIGHUP, handler)

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous if previous is not None else signal.SIG_DFL)

    return restore
