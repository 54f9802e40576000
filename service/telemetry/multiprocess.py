"""The directory where worker processes share their metric values (SEQCAST_WORKERS > 1).

prometheus_client's multiprocess mode keeps each process's values in files under
PROMETHEUS_MULTIPROC_DIR; whichever worker is scraped reads them all. The directory must
start empty (values left by an earlier run would be added in), so `seqcast serve` makes a
fresh one for each run, before the workers start, and removes it when they have stopped.
This module imports nothing from prometheus_client: the variable must be set before a
worker imports it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def shared_metrics_dir(needed: bool) -> Iterator[str | None]:
    """A fresh directory in PROMETHEUS_MULTIPROC_DIR for the workers to come, when `needed`
    (made inside the directory that variable named before, if any, else in the temporary
    directory); the variable is restored and the directory removed afterwards."""
    if not needed:
        yield None
        return
    before = os.environ.get(MULTIPROC_ENV)
    directory = tempfile.mkdtemp(prefix="seqcast-metrics-", dir=before or None)
    os.environ[MULTIPROC_ENV] = directory
    log.info("worker processes share their metrics in %s", directory)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        if before is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = before
