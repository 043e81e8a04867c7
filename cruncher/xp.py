"""The array-module switch: numpy by default, cupy when a GPU is present.

Numerical code is written once against the module returned by :func:`array_module` and moves
data in and out with :func:`asarray` / :func:`to_numpy`. The choice is made by the
``compute.array`` setting (``auto``, ``numpy`` or ``cupy``); ``auto`` picks cupy only when it is
installed and ``cupy.is_available()`` says a GPU can be used.
"""
from __future__ import annotations

import functools
import logging
import os
from types import ModuleType
from typing import Any

import numpy as np

_log = logging.getLogger(__name__)
CHOICES = ("auto", "numpy", "cupy")


@functools.lru_cache(maxsize=None)
def _cupy() -> ModuleType | None:
    try:
        import cupy  # noqa: PLC0415  (optional dependency)
    except Exception:  # not installed, or its CUDA libraries are missing
        return None
    try:
        return cupy if cupy.is_available() else None
    except Exception:
        return None


def array_module(choice: str | None = None) -> ModuleType:
    """numpy or cupy, per ``choice`` (default: ``$CRUNCHER_COMPUTE_ARRAY`` or ``auto``)."""
    choice = (choice or os.environ.get("CRUNCHER_COMPUTE_ARRAY") or "auto").lower()
    if choice not in CHOICES:
        raise ValueError(f"array backend {choice!r}: expected one of {', '.join(CHOICES)}")
    if choice == "numpy":
        return np
    cupy = _cupy()
    if cupy is None:
        if choice == "cupy":
            raise RuntimeError("compute.array = cupy, but cupy is not installed or no GPU is usable")
        return np
    return cupy


def to_numpy(array: Any) -> np.ndarray:
    """A numpy array from a numpy or cupy array."""
    return array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else \
        np.asarray(array)


def name(xp: ModuleType) -> str:
    return "cupy" if xp is not np else "numpy"


def ndimage_module(xp: ModuleType) -> ModuleType:
    """scipy.ndimage for numpy arrays, cupyx.scipy.ndimage for cupy arrays."""
    if xp is np:
        from scipy import ndimage
    else:  # pragma: no cover - needs a GPU
        from cupyx.scipy import ndimage
    return ndimage


def sparse_module(xp: ModuleType) -> ModuleType:
    """scipy.sparse for numpy arrays, cupyx.scipy.sparse for cupy arrays."""
    if xp is np:
        from scipy import sparse
    else:  # pragma: no cover - needs a GPU
        from cupyx.scipy import sparse
    return sparse
