"""Fixed glibc malloc thresholds, so memory freed after a large request goes back to the OS.

glibc serves a large allocation (a request's arrays) with mmap and returns it on free,
but then raises its mmap threshold to that size (up to 32 MiB) and its trim threshold
to twice that, so later allocations of that size come from the heap and are kept when
freed. Under concurrent maximum-size requests that left about 100 MiB more resident
afterwards (docs/operations.md). Fixed thresholds switch the adjustment off. The trim
threshold stays well above what one small request allocates and frees: at 128 KiB the
heap top was returned and taken back on nearly every request, and predict at 16
connections did 8 % fewer requests per second.

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
# mapped and unmapped on their own, and a free heap top beyond 4 MiB is returned.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024
TRIM_THRESHOLD_BYTES = 4 * 1024 * 1024


def fix_malloc_thresholds() -> bool:
    """Set both thresholds once per process; False where glibc's mallopt is absent."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    for param, value, env in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES, "MALLOC_MMAP_THRESHOLD_"),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES, "MALLOC_TRIM_THRESHOLD_"),
    ):
        if env not in os.environ and mallopt(param, value) != 1:
            log.warning("mallopt(%d, %d) failed", param, value)
    return True
