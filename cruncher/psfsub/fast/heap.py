"""Freed memory kept in the process for the next wavelength (glibc's allocator).

Every wavelength allocates and frees the same large arrays (about 2.4 GB in all at 40 cubes:
the aligned frames, each section's centred pixels and covariance, the smoothed blocks). By
default glibc maps every array over 32 MB afresh and unmaps it when freed, and gives the top of
its heap back to the kernel, so each wavelength pays again for faulting in and zeroing the same
pages: about 1 s of system time per wavelength of the 40-cube set, 12 % of its wall time on the
development machine. While the engine runs, :func:`keep_freed_memory` has glibc serve every
allocation from its heap and keep what is freed, so a wavelength reuses the previous one's
pages; the peak memory stays that of the largest wavelength. Elsewhere (not Linux with glibc)
nothing changes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
from contextlib import contextmanager

_log = logging.getLogger(__name__)

#: ``mallopt`` parameters and glibc's defaults (``malloc.h``).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
#: The largest threshold ``mallopt`` takes (an int): free memory beyond it is still returned.
KEEP_UP_TO = 2 ** 31 - 1


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim     # noqa: B018 - present in glibc only
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """From now on, in this process and the processes it forks: allocate from the heap only and
    keep freed memory (up to 2 GB of it) for reuse. Returns whether the allocator took it."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO))


def give_back_freed_memory() -> None:
    """glibc's default limits again, and the free memory returned to the kernel now."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)


@contextmanager
def freed_memory_kept():
    """:func:`keep_freed_memory` for the duration of the block."""
    kept = keep_freed_memory()
    _log.debug("freed memory kept for reuse: %s", kept)
    try:
        yield kept
    finally:
        if kept:
            give_back_freed_memory()
