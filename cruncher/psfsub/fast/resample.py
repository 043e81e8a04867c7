"""Cubic-spline resampling that reproduces pyKLIP's (scipy's ``map_coordinates``) bit for bit in
its mathematics, but organised for speed.

pyKLIP resamples every frame with ``scipy.ndimage.map_coordinates(order=3, mode='constant',
cval=nan)`` after filling NaNs with the frame's median, then marks an output pixel NaN when any of
the four source pixels around it was NaN. Two facts make that fast here:

- aligning and scaling about a centre is *separable*: the source x depends only on the output x,
  so the resampled frame is ``Wy @ coefficients @ Wx.T`` with two banded matrices, applied to a
  batch of frames as batched products one block of 32 output rows (columns) at a time, each block
  reading only the band of source rows it needs (2.2x faster than dense products at 281 pixels);
- derotation uses the same coordinates for every image of a cube (all wavelengths, all KL
  cutoffs), so its interpolation is one sparse matrix per cube applied to all of them at once
  (for cupy, and without numba; on the CPU :mod:`~cruncher.psfsub.fast.derotation` computes the
  same weights where it uses them, keeping no matrix).

The spline coefficients (the prefilter) are scipy's, computed by
:mod:`~cruncher.psfsub.fast.prefilter` where numba is present; for ``mode='constant'`` scipy
mirrors the coefficients at the edges and gives ``cval`` outside ``[0, n-1]``, which is what the
weights below do. Works on numpy or cupy arrays (``xp``).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from cruncher.psfsub.fast import prefilter
from cruncher.psfsub.fast.jit import available, compiled
from cruncher.xp import ndimage_module, sparse_module


def spline_coefficients(frames, xp: ModuleType = np, nan=None):
    """(coefficients float32, NaN mask) of a stack (B, Y, X): NaNs filled with each frame's median.

    ``nan`` may give the stack's NaN mask, if it is known already.
    """
    frames = xp.asarray(frames, dtype=xp.float32)
    nan = xp.isnan(frames) if nan is None else nan
    medians = None
    if bool(nan.any()):
        medians = xp.nanmedian(frames.reshape(len(frames), -1), axis=1).astype(xp.float32)
    if xp is np:
        done = prefilter.coefficients(frames, np.zeros(len(frames), np.float32)
                                      if medians is None else medians)
        if done is not None:
            return done, nan
    filled = frames if medians is None else xp.where(nan, medians[:, None, None], frames)
    nd = ndimage_module(xp)
    out = nd.spline_filter1d(filled, 3, axis=1, output=xp.float64, mode="constant")
    out = nd.spline_filter1d(out, 3, axis=2, output=xp.float64, mode="constant")
    return out.astype(xp.float32), nan


def cubic_weights(t):
    """Cubic B-spline weights of the four taps floor-1 .. floor+2 for fractional parts ``t``."""
    t2, t3 = t * t, t * t * t
    return np.stack([(1 - t) ** 3 / 6, (3 * t3 - 6 * t2 + 4) / 6,
                     (-3 * t3 + 3 * t2 + 3 * t + 1) / 6, t3 / 6], axis=-1)


def mirror(index, n: int):
    """scipy's coefficient mirroring about 0 and n-1."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index > n - 1, period - index, index)


#: Output rows (columns) per block of the banded alignment products.
BLOCK = 32


@dataclass(frozen=True)
class Band:
    """One block of a 1-D interpolation operator: output positions ``start:stop`` are combinations
    of source pixels ``lo:hi`` with ``weights`` (B, stop - start, hi - lo)."""

    start: int
    stop: int
    lo: int
    hi: int
    weights: np.ndarray


def _tap_indices(coords, n):
    """(B, m, 4) mirrored spline taps, (B, m, 4) weights (0 outside [0, n-1]), (B, m) floor and
    ceil source pixels (clipped) of coordinates (B, m) on an axis of n pixels."""
    floor = np.floor(coords)
    outside = (coords < 0) | (coords > n - 1)
    taps = mirror(floor.astype(np.int64)[..., None] - 1 + np.arange(4), n)
    weights = cubic_weights(coords - floor)
    weights[outside] = 0
    lo = np.clip(floor, 0, n - 1).astype(np.int64)
    hi = np.clip(np.ceil(coords), 0, n - 1).astype(np.int64)
    return taps, weights, lo, hi, outside


def axis_operators(coords: np.ndarray, n: int, block: int = BLOCK):
    """Banded 1-D interpolation operators for coordinates (B, m) on an axis of n, and pyKLIP's NaN
    test.

    Returns the :class:`Band` blocks of the spline weights (float32), the floor and ceil source
    pixels (B, m) that pyKLIP checks for NaN, and ``outside`` (B, m) bool for coordinates beyond
    ``[0, n-1]`` (those become NaN, so their weights are left out). Each output position needs
    only four source pixels, so a block of ``block`` positions needs a narrow band of the source:
    the products cost a fraction of dense ones.
    """
    coords = np.asarray(coords, dtype=np.float64)
    batch, m = coords.shape
    taps, weights, floor, ceil, outside = _tap_indices(coords, n)
    bands = []
    for start in range(0, m, block):
        stop = min(start + block, m)
        tap, inside = taps[:, start:stop], ~outside[:, start:stop]
        if not inside.any():
            continue
        lo, hi = int(tap[inside].min()), int(tap[inside].max()) + 1
        width = hi - lo
        rows = (np.arange(batch)[:, None] * (stop - start) + np.arange(stop - start))[..., None]
        local = np.where(inside[..., None], tap - lo, 0)
        dense = np.bincount((rows * width + local).ravel(), weights[:, start:stop].ravel(),
                            minlength=batch * (stop - start) * width)
        bands.append(Band(start, stop, lo, hi, dense.reshape(batch, stop - start, width)
                          .astype(np.float32)))
    return bands, floor, ceil, outside


def _or_rows(mask, lo, hi, xp: ModuleType):
    """(B, m, X): ``mask[b, lo[b, i]] | mask[b, hi[b, i]]``, gathering whole rows (fast)."""
    batch, ny, nx = mask.shape
    flat = mask.reshape(batch * ny, nx)
    base = (xp.arange(batch) * ny)[:, None]
    return (flat[(base + lo).ravel()] | flat[(base + hi).ravel()]).reshape(batch, -1, nx)


def _spread_nan(nanmask, lo_y, hi_y, lo_x, hi_x, xp: ModuleType):
    """pyKLIP's test: NaN where any of the four source pixels around the coordinate is NaN."""
    rows = _or_rows(nanmask, lo_y, hi_y, xp)
    both = _or_rows(xp.ascontiguousarray(rows.transpose(0, 2, 1)), lo_x, hi_x, xp)
    return both.transpose(0, 2, 1)


def align_and_scale(coeffs, nanmask, centers, scales, new_center, xp: ModuleType = np,
                    block: int = BLOCK):
    """Frames (B, Y, X) moved from ``centers`` (B, 2) to ``new_center`` and scaled by ``scales``.

    pyKLIP's ``klip.align_and_scale(img, new_center, old_center, scale)``: the source coordinate of
    output x is ``(x - new_x) / scale + old_x`` (and the same in y).
    """
    batch, ny, nx = coeffs.shape
    inv = 1.0 / np.asarray(scales, np.float64)[:, None]
    xs = (np.arange(nx)[None, :] - new_center[0]) * inv + np.asarray(centers)[:, 0:1]
    ys = (np.arange(ny)[None, :] - new_center[1]) * inv + np.asarray(centers)[:, 1:2]
    if xp is np and available():
        return _align_compiled(coeffs, nanmask, xs, ys)
    bands_x, lo_x, hi_x, outx = axis_operators(xs, nx, block)
    bands_y, lo_y, hi_y, outy = axis_operators(ys, ny, block)
    lo_x, hi_x, outx, lo_y, hi_y, outy = (xp.asarray(a) for a in (lo_x, hi_x, outx, lo_y, hi_y,
                                                                  outy))
    across = xp.zeros((batch, ny, nx), xp.float32)
    for band in bands_x:
        across[:, :, band.start:band.stop] = xp.matmul(
            coeffs[:, :, band.lo:band.hi], xp.asarray(band.weights).transpose(0, 2, 1))
    out = xp.zeros((batch, ny, nx), xp.float32)
    for band in bands_y:
        out[:, band.start:band.stop] = xp.matmul(xp.asarray(band.weights),
                                                 across[:, band.lo:band.hi])
    bad = _spread_nan(nanmask, lo_y, hi_y, lo_x, hi_x, xp)
    bad |= outy[:, :, None] | outx[:, None, :]
    out[bad] = xp.nan
    return out


def _align_frames(coeffs, nanmask, taps_x, weights_x, lo_x, hi_x, out_x, taps_y, weights_y,
                  lo_y, hi_y, out_y, out):
    """Compiled :func:`align_and_scale`: per frame, the spline along x for every source row
    (four gathered taps), then along y (four rows, summed along the row so that it vectorises),
    in float64, and pyKLIP's NaN test."""
    batch, ny, nx = coeffs.shape
    across = np.empty((ny, nx), np.float64)
    acc = np.empty(nx, np.float64)
    bad_row = np.empty(nx, np.bool_)
    for b in range(batch):
        for r in range(ny):
            row = coeffs[b, r]
            for x in range(nx):
                across[r, x] = (weights_x[b, x, 0] * row[taps_x[b, x, 0]]
                                + weights_x[b, x, 1] * row[taps_x[b, x, 1]]
                                + weights_x[b, x, 2] * row[taps_x[b, x, 2]]
                                + weights_x[b, x, 3] * row[taps_x[b, x, 3]])
        for y in range(ny):
            if out_y[b, y]:
                out[b, y, :] = np.nan
                continue
            for x in range(nx):
                acc[x] = weights_y[b, y, 0] * across[taps_y[b, y, 0], x]
            for t in range(1, 4):
                w = weights_y[b, y, t]
                source = across[taps_y[b, y, t]]
                for x in range(nx):
                    acc[x] += w * source[x]
            mask_lo, mask_hi = nanmask[b, lo_y[b, y]], nanmask[b, hi_y[b, y]]
            for x in range(nx):
                bad_row[x] = mask_lo[x] or mask_hi[x]
            for x in range(nx):
                bad = out_x[b, x] or bad_row[lo_x[b, x]] or bad_row[hi_x[b, x]]
                out[b, y, x] = np.nan if bad else np.float32(acc[x])


_align_frames = compiled(_align_frames)


def _align_compiled(coeffs, nanmask, xs, ys):
    """:func:`align_and_scale` by the compiled loop, for source coordinates xs (B, X), ys (B, Y)."""
    batch, ny, nx = coeffs.shape
    out = np.empty((batch, ny, nx), np.float32)
    _align_frames(np.ascontiguousarray(coeffs), np.ascontiguousarray(nanmask),
                  *_tap_indices(xs, nx), *_tap_indices(ys, ny), out)
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) before worker processes fork."""
    if available():
        coords = np.array([[0.5, 1.5, 2.5]])
        _align_compiled(np.zeros((1, 3, 3), np.float32), np.zeros((1, 3, 3), bool), coords, coords)


def rotation_operator(shape: tuple[int, int], angle_deg: float, center, new_center, flipx: bool,
                      xp: ModuleType = np):
    """Sparse (pixels x pixels) spline and NaN-test operators of pyKLIP's ``klip.rotate``."""
    ny, nx = shape
    x, y = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float))
    if new_center is not None:
        x -= new_center[0] - center[0]
        y -= new_center[1] - center[1]
    if flipx:
        x = center[0] - (x - center[0])
    angle = np.radians(angle_deg)
    xp_ = (x - center[0]) * np.cos(angle) + (y - center[1]) * np.sin(angle) + center[0]
    yp_ = -(x - center[0]) * np.sin(angle) + (y - center[1]) * np.cos(angle) + center[1]
    xs, ys = xp_.ravel(), yp_.ravel()
    outside = (xs < 0) | (xs > nx - 1) | (ys < 0) | (ys > ny - 1)
    fx, fy = np.floor(xs), np.floor(ys)
    wx, wy = cubic_weights(xs - fx), cubic_weights(ys - fy)
    ix = mirror(fx.astype(np.int64)[:, None] - 1 + np.arange(4), nx)
    iy = mirror(fy.astype(np.int64)[:, None] - 1 + np.arange(4), ny)
    cols = (iy[:, :, None] * nx + ix[:, None, :]).ravel()
    vals = (wy[:, :, None] * wx[:, None, :]).ravel()
    interp = _rows_of(vals.astype(np.float32), cols, 16, xs.size)
    lo_x, hi_x = np.clip(fx, 0, nx - 1), np.clip(np.ceil(xs), 0, nx - 1)
    lo_y, hi_y = np.clip(fy, 0, ny - 1), np.clip(np.ceil(ys), 0, ny - 1)
    corners = np.stack([lo_y * nx + lo_x, lo_y * nx + hi_x, hi_y * nx + lo_x, hi_y * nx + hi_x], 1)
    test = _rows_of(np.ones(corners.size, np.float32), corners.ravel().astype(np.int64), 4,
                    xs.size)
    if xp is not np:  # pragma: no cover - needs a GPU
        spx = sparse_module(xp)
        interp, test = spx.csr_matrix(interp), spx.csr_matrix(test)
    return interp, test, xp.asarray(outside)


def _rows_of(values: np.ndarray, columns: np.ndarray, per_row: int, n: int):
    """An (n, n) CSR matrix with ``per_row`` entries in every row, built directly (a repeated
    column in a row, where the spline taps are mirrored at the edge, is summed by the product)."""
    from scipy import sparse

    indptr = np.arange(0, per_row * n + 1, per_row, dtype=np.int64)
    return sparse.csr_matrix((values, columns, indptr), shape=(n, n))


def rotate(images, operator, xp: ModuleType = np):
    """Images (B, Y, X) that share one rotation (``rotation_operator``), as pyKLIP rotates each."""
    interp, test, outside = operator
    batch, ny, nx = images.shape
    empty = ~xp.isfinite(images).reshape(batch, -1).any(axis=1)
    coeffs, nan = spline_coefficients(images, xp)
    flat = coeffs.reshape(batch, -1).T
    out = xp.asarray((interp @ flat).T, dtype=xp.float32)
    spread = (test @ nan.reshape(batch, -1).T.astype(xp.float32)).T
    out[(spread > 0) | outside[None, :]] = xp.nan
    out = out.reshape(batch, ny, nx)
    if bool(empty.any()):   # pyKLIP returns an all-NaN image unchanged
        out[empty] = images[empty]
    return out
