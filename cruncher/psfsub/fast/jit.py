"""The compiler for the engine's inner loops: numba, when it is installed.

Each compiled loop is ordinary Python (it runs, slowly, without numba) and is compiled with
:func:`compiled` where numba is present; callers ask :func:`available` and otherwise take the
numpy, scipy or LAPACK path that the loop replaces. ``error_model="numpy"`` lets a division by
zero give inf instead of raising, which is what lets LLVM vectorise divisions across lanes;
``cache=True`` keeps the machine code on disk, so a new process loads it in a fraction of a
second instead of compiling for seconds.
"""
from __future__ import annotations

try:
    import numba
except ImportError:     # every caller has a path without it
    numba = None


def available() -> bool:
    """Whether the compiled loops can run (numba installed)."""
    return numba is not None


def compiled(function, **options):
    """``function`` compiled by numba (no fast-math: IEEE rounding, in the order written), or
    unchanged without numba."""
    if numba is None:
        return function
    try:
        return numba.njit(error_model="numpy", cache=True, nogil=True, **options)(function)
    except RuntimeError:    # no writable cache directory (a read-only install, no home)
        return numba.njit(error_model="numpy", nogil=True, **options)(function)
