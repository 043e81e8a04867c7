"""Compiled gathers (numba) for the copies KLIP makes of every section and every reference set.

They read each source row once, in one pass, with no intermediate array:

- :func:`centred_columns`: a section's pixels of every frame (``array[:, index]``), centred in
  the same pass. numpy's fancy index is slow along the second axis, and copying run by run is
  slow where a section breaks into many short runs (the image corners, where pixels are NaN in
  every frame);
- :func:`submatrix`: a science frame's reference covariance (``cov[ix_(index, index)]``), 1,440
  times per wavelength at the standard size, in the references' order: an exact copy;
- :func:`centred_rows`: the smoothed sections centred for the ranking, with their norms.

The means are summed in order, not pairwise as numpy sums, so they differ from numpy's in the
last bits.
"""
from __future__ import annotations

import numpy as np

from cruncher.psfsub.fast.jit import available, compiled


def submatrix(matrix: np.ndarray, index: np.ndarray) -> np.ndarray | None:
    """``matrix[ix_(index, index)]`` (a new C-ordered array), or None without numba."""
    if not available():
        return None
    out = np.empty((index.size, index.size), matrix.dtype)
    _submatrix(out, matrix, np.ascontiguousarray(index, np.int64))
    return out


def centred_columns(array: np.ndarray, index: np.ndarray):
    """``(centred, nan)`` or None without numba: ``array[:, index]`` in float64 less each row's
    mean over its finite values, NaN -> 0, and where it was NaN (bool)."""
    if not available():
        return None
    out = np.empty((array.shape[0], index.size), np.float64)
    nan = np.empty(out.shape, np.bool_)
    _centred_columns(out, nan, array, np.ascontiguousarray(index, np.int64))
    return out, nan


@compiled
def _centred_columns(out, nan, array, index):
    for row in range(out.shape[0]):
        source, target, missing = array[row], out[row], nan[row]
        total, finite = 0.0, 0
        for j in range(index.size):
            value = np.float64(source[index[j]])
            if value != value:
                missing[j], target[j] = True, 0.0
            else:
                missing[j], target[j] = False, value
                total += value
                finite += 1
        mean = total / max(finite, 1)
        for j in range(index.size):
            target[j] = 0.0 if missing[j] else target[j] - mean


def centred_rows(rows: np.ndarray, out: np.ndarray):
    """``out[:] = rows - (each row's mean)`` in float64 and each row's norm after centring, in
    one pass over ``rows`` (finite values), or None without numba."""
    if not available():
        return None
    norms = np.empty(rows.shape[0], np.float64)
    _centred_rows(out, norms, rows)
    return norms


@compiled
def _centred_rows(out, norms, rows):
    for row in range(rows.shape[0]):
        source, target = rows[row], out[row]
        total = 0.0
        for j in range(source.size):
            total += np.float64(source[j])
        mean = total / max(source.size, 1)
        squares = 0.0
        for j in range(source.size):
            value = np.float64(source[j]) - mean
            target[j] = value
            squares += value * value
        norms[row] = np.sqrt(squares)


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
        centred_columns(np.zeros((2, 3), np.float32), np.arange(2))
        for rows in (np.zeros((2, 3), np.float32), np.zeros((2, 5), np.float32)[:, 1:4]):
            centred_rows(rows, np.empty((2, 3)))      # contiguous, and a block's columns
        submatrix(np.zeros((3, 3)), np.arange(2))
