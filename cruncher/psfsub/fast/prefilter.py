"""scipy's cubic-spline prefilter of image stacks, compiled (numba), bit for bit.

Every resampling pyKLIP does (``map_coordinates`` and ``rotate``, order 3) first turns the image
into B-spline coefficients with ``spline_filter1d`` along y, then along x. That prefilter is the
recursive filter of Unser, Aldroubi and Eden (1991) with the pole ``z = sqrt(3) - 2``: each line
is multiplied by the gain ``(1 - z)(1 - 1/z)``, started with the mirror-symmetric boundary value,
run forward (``c[i] += z c[i-1]``) and backward (``c[i] = z (c[i+1] - c[i])``), in double
precision. scipy runs it one line at a time through a copy buffer: 2.3 ms per 281 x 281 frame
here, which made it most of the engine's set-up and of each derotation. This module does the same
arithmetic, in the same order for every line, but on all the lines of an image at once, so that
each step is one vectorised operation across lines (along x, on a transposed copy that stays in
cache).
"""
from __future__ import annotations

import math

import numpy as np

from cruncher.psfsub.fast.jit import available, compiled

#: The cubic B-spline's pole, sqrt(3) - 2, as scipy writes it.
POLE = -0.267949192431122706472553658494127633


def _filter_columns(c, z):
    """The prefilter along axis 0 of ``c`` (n, m), every column a line, in place."""
    n, m = c.shape
    gain = (1.0 - z) * (1.0 - 1.0 / z)
    for i in range(n):
        for j in range(m):
            c[i, j] *= gain
    # the first value of the forward pass, for an input mirrored about both ends
    z_n_1 = math.pow(z, n - 1)
    for j in range(m):
        c[0, j] = c[0, j] + z_n_1 * c[n - 1, j]
    z_i = z
    for i in range(1, n - 1):
        for j in range(m):
            c[0, j] += z_i * (c[i, j] + z_n_1 * c[n - 1 - i, j])
        z_i *= z
    denominator = 1 - z_n_1 * z_n_1
    for j in range(m):
        c[0, j] /= denominator
    for i in range(1, n):
        for j in range(m):
            c[i, j] += z * c[i - 1, j]
    for j in range(m):
        c[n - 1, j] = (z * c[n - 2, j] + c[n - 1, j]) * z / (z * z - 1)
    for i in range(n - 2, -1, -1):
        for j in range(m):
            c[i, j] = z * (c[i + 1, j] - c[i, j])


def _prefilter(frames, fill, out):
    """``out[f]`` (float32): frame ``f`` (float32, NaN replaced by ``fill[f]``) prefiltered along
    y, then along x, in double precision, as ``spline_filter1d`` twice and a cast give it."""
    count, ny, nx = frames.shape
    along_y = np.empty((ny, nx), np.float64)
    along_x = np.empty((nx, ny), np.float64)
    for f in range(count):
        for y in range(ny):
            for x in range(nx):
                value = frames[f, y, x]
                along_y[y, x] = fill[f] if value != value else value
        _filter_columns(along_y, POLE)
        for x in range(nx):
            for y in range(ny):
                along_x[x, y] = along_y[y, x]
        _filter_columns(along_x, POLE)
        for y in range(ny):
            for x in range(nx):
                out[f, y, x] = np.float32(along_x[x, y])


# no fast-math: the same rounding as scipy's C loops (no fused multiply-add, no reordering)
_filter_columns = compiled(_filter_columns)
_prefilter = compiled(_prefilter)


#: Below this many pixels along an axis, scipy itself (its boundary rules for very short lines).
SHORTEST = 4


def coefficients(frames: np.ndarray, fill: np.ndarray) -> np.ndarray | None:
    """float32 spline coefficients of ``frames`` (B, Y, X) float32 whose NaNs are read as the
    frame's ``fill`` value; None where the compiled loop does not apply (no numba, lines
    shorter than :data:`SHORTEST`)."""
    if not available() or min(frames.shape[1:]) < SHORTEST or frames.dtype != np.float32:
        return None
    out = np.empty(frames.shape, np.float32)
    _prefilter(frames, np.asarray(fill, np.float32), out)
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) before worker processes fork."""
    if available():
        coefficients(np.zeros((1, SHORTEST, SHORTEST), np.float32), np.zeros(1, np.float32))
