"""Keep a CPU training process's resident memory close to what it really holds (glibc malloc).

glibc serves big blocks with mmap and hands them back to the kernel on free, but each time such a
block is freed it raises its mmap threshold (up to 32 MiB on 64-bit). After a few steps most
activation tensors come from the heap instead, where freed space stays mapped and fragments, so a
CPU run's peak RSS climbs hundreds of MB above its live tensors. Fixing the threshold (which also
turns off the dynamic raise) keeps large tensors in mmap; ``malloc_trim`` returns what setup freed.
Both are no-ops off glibc (macOS, musl, or a preloaded jemalloc/tcmalloc that replaces them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import lru_cache

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # only glibc has it  # noqa: B018
        return libc
    except (OSError, AttributeError):
        return None


def fix_mmap_threshold(threshold_bytes: int) -> bool:
    """Serve allocations of at least ``threshold_bytes`` with mmap from now on; True if applied."""
    libc = _glibc()
    if libc is None or threshold_bytes <= 0:
        return False
    applied = bool(libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(threshold_bytes)))
    if applied:
        logger.debug("glibc mmap threshold fixed at %d bytes", threshold_bytes)
    return applied


def release_free_memory() -> bool:
    """Return freed heap pages to the kernel (``malloc_trim(0)``); True if any were released."""
    libc = _glibc()
    return bool(libc.malloc_trim(ctypes.c_size_t(0))) if libc is not None else False
