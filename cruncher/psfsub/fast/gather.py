"""Compiled gathers (numba) for the copies KLIP makes of every section and every reference set.

Both are exact copies (a float32 to float64 conversion at most), so they give the same numbers,
bit for bit, as the numpy indexing they replace; they are faster because they read each source
row once, in one pass, with no intermediate array:

- :func:`columns`: a section's pixels of every frame (``array[:, index]``). numpy's fancy index
  is slow along the second axis, and copying run by run is slow where a section breaks into many
  short runs (the image corners, where pixels are NaN in every frame);
- :func:`submatrix`: a science frame's reference covariance (``cov[ix_(index, index)]``), 1,440
  times per wavelength at the standard size, in the references' order.
"""
from __future__ import annotations

import numpy as np

from cruncher.psfsub.fast.jit import available, compiled


def columns(array: np.ndarray, index: np.ndarray, dtype) -> np.ndarray | None:
    """``array[:, index]`` as ``dtype`` (a new C-ordered array), or None without numba."""
    if not available():
        return None
    out = np.empty((array.shape[0], index.size), dtype)
    _columns(out, array, np.ascontiguousarray(index, np.int64))
    return out


def submatrix(matrix: np.ndarray, index: np.ndarray) -> np.ndarray | None:
    """``matrix[ix_(index, index)]`` (a new C-ordered array), or None without numba."""
    if not available():
        return None
    out = np.empty((index.size, index.size), matrix.dtype)
    _submatrix(out, matrix, np.ascontiguousarray(index, np.int64))
    return out


@compiled
def _columns(out, array, index):
    for row in range(out.shape[0]):
        source = array[row]
        target = out[row]
        for j in range(index.size):
            target[j] = source[index[j]]


@compiled
def _submatrix(out, matrix, index):
    for i in range(index.size):
        source = matrix[index[i]]
        target = out[i]
        for j in range(index.size):
            target[j] = source[index[j]]


def warm_up() -> None:
    """Compile (or load from numba's cache) for the dtypes the engine uses, before workers fork."""
    if available():
        columns(np.zeros((2, 3), np.float32), np.arange(2), np.float64)
        submatrix(np.zeros((3, 3)), np.arange(2))
