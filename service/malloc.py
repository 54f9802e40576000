"""Fixed glibc malloc thresholds, so memory freed after a large request goes back to the OS.

glibc serves a large allocation (a request's arrays) with mmap and returns it on free,
but then raises its mmap threshold to that size (up to 32 MiB) and its trim threshold
to twice that, so later allocations of that size come from the heap and are kept when
freed. Under concurrent maximum-size requests that left about 140 MiB more resident
afterwards (docs/operations.md). Fixed thresholds switch the adjustment off.

SEQCAST_FIXED_MALLOC_THRESHOLDS=false leaves glibc's adaptive thresholds; glibc's own
environment variables (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) take precedence;
elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h) and the values: allocations of at least 128 KiB are
# mapped and unmapped on their own, and a free heap top beyond 128 KiB is returned.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 128 * 1024


def fix_malloc_thresholds() -> bool:
    """Set both thresholds once per process; False where glibc's mallopt is absent."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    for param, env in (
        (_M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
        (_M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_"),
    ):
        if env not in os.environ and mallopt(param, THRESHOLD_BYTES) != 1:
            log.warning("mallopt(%d, %d) failed", param, THRESHOLD_BYTES)
    return True
