"""pyKLIP's ``klip.rotate`` compiled (numba), with no operator kept in memory.

The sparse operators of :func:`~cruncher.psfsub.fast.resample.rotation_operator` hold 16 spline
weights and columns per pixel (about 13 MB per science frame at 281 x 281 pixels, 0.5 GB for
the 40 frames of a 40-cube sequence, kept for the whole job). Here each output pixel's source
coordinate, mirrored taps and weights are computed where they are used, in the operator's
arithmetic (float64 coordinates and weights, the 16 weights rounded to float32, the sum in
float32 in the operator's order), once for all the images that share the rotation.
"""
from __future__ import annotations

import math

import numpy as np

from cruncher.psfsub.fast import resample
from cruncher.psfsub.fast.jit import available, compiled


def rotate(images: np.ndarray, angle_deg: float, center, new_center, flipx: bool) -> np.ndarray:
    """Images (B, Y, X) rotated as pyKLIP's ``klip.rotate(image, angle_deg, center, new_center,
    flipx)`` rotates each (numpy arrays; needs numba: see :func:`available`)."""
    batch, ny, nx = images.shape
    empty = ~np.isfinite(images).reshape(batch, -1).any(axis=1)
    coeffs, nan = resample.spline_coefficients(images)
    angle = np.radians(angle_deg)
    shift = (0.0, 0.0) if new_center is None else (new_center[0] - center[0],
                                                   new_center[1] - center[1])
    out = np.empty((batch, ny, nx), np.float32)
    # the images of one pixel side by side: each spline tap reads them in one cache line
    _rotate(np.ascontiguousarray(coeffs.transpose(1, 2, 0)), nan, float(np.cos(angle)), float(np.sin(angle)),
            float(center[0]), float(center[1]), float(shift[0]), float(shift[1]), bool(flipx),
            bool(nan.any()), out)
    if empty.any():     # pyKLIP returns an all-NaN image unchanged
        out[empty] = images[empty]
    return out


def _weights(t, out):
    """:func:`~cruncher.psfsub.fast.resample.cubic_weights` of one fractional part."""
    t2, t3 = t * t, t * t * t
    s = 1 - t
    out[0] = s * s * s / 6
    out[1] = (3 * t3 - 6 * t2 + 4) / 6
    out[2] = (-3 * t3 + 3 * t2 + 3 * t + 1) / 6
    out[3] = t3 / 6


def _mirror(index, n):
    """:func:`~cruncher.psfsub.fast.resample.mirror` of one index."""
    if 0 <= index <= n - 1:     # the taps of all but the edge pixels (no integer division)
        return index
    if n == 1:
        return 0
    period = 2 * (n - 1)
    index = abs(index) % period
    return period - index if index > n - 1 else index


def _rotate(coeffs, nan, cos, sin, cx, cy, dx, dy, flipx, any_nan, out):
    ny, nx, batch = coeffs.shape
    wx, wy = np.empty(4), np.empty(4)
    ix, iy = np.empty(4, np.int64), np.empty(4, np.int64)
    w = np.empty((4, 4), np.float32)
    for row in range(ny):
        for col in range(nx):
            x, y = col - dx, row - dy
            if flipx:
                x = cx - (x - cx)
            xs = (x - cx) * cos + (y - cy) * sin + cx
            ys = -(x - cx) * sin + (y - cy) * cos + cy
            if xs < 0 or xs > nx - 1 or ys < 0 or ys > ny - 1:
                for b in range(batch):
                    out[b, row, col] = np.nan
                continue
            fx, fy = math.floor(xs), math.floor(ys)
            _weights(xs - fx, wx)
            _weights(ys - fy, wy)
            for k in range(4):
                ix[k] = _mirror(int(fx) - 1 + k, nx)
                iy[k] = _mirror(int(fy) - 1 + k, ny)
            for a in range(4):
                for c in range(4):
                    w[a, c] = np.float32(wy[a] * wx[c])
            lo_x, hi_x = min(max(int(fx), 0), nx - 1), min(max(int(math.ceil(xs)), 0), nx - 1)
            lo_y, hi_y = min(max(int(fy), 0), ny - 1), min(max(int(math.ceil(ys)), 0), ny - 1)
            for b in range(batch):
                if any_nan and (nan[b, lo_y, lo_x] or nan[b, lo_y, hi_x] or nan[b, hi_y, lo_x]
                                or nan[b, hi_y, hi_x]):
                    out[b, row, col] = np.nan
                    continue
                acc = np.float32(0)
                for a in range(4):
                    for c in range(4):
                        acc += w[a, c] * coeffs[iy[a], ix[c], b]
                out[b, row, col] = acc


_weights, _mirror, _rotate = compiled(_weights), compiled(_mirror), compiled(_rotate)


def warm_up() -> None:
    """Compile (or load from numba's cache) before worker processes fork."""
    if available():
        rotate(np.zeros((1, 4, 4), np.float32), 10.0, (1.5, 1.5), (2, 2), True)
