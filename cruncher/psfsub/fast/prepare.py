"""The frames made ready for the fast engine's workers: pyKLIP's high-pass filter, the spline
coefficients every alignment starts from, and the frames parked on disk while the workers run.

These steps touch every pixel of every frame once (1,480 frames of 281 x 281 for an hour of GPI
data), so they work in place where they can and in batches on threads (numpy's products,
scipy's spline filter and file writes release the GIL).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cruncher.psfsub.fast import resample

#: Frames per batch (bounds the temporary arrays to ~40 MB each).
BATCH = 64


def high_pass(images: np.ndarray, fwhm_or_true, threads: int = 1,
              overwrite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """pyKLIP's ``high_pass_filter`` of every frame (``highpass=True`` or a FWHM in pixels), and
    the frames' NaN mask.

    pyKLIP multiplies the frame's Fourier transform by ``1 - G``, ``G`` a Gaussian of the integer
    frequencies, after filling NaNs with the nearest pixel's value. ``G`` is separable, so the
    low-pass part is a circular convolution along each axis, ``Cy @ frame @ Cx`` with two real
    circulant matrices: the same numbers to rounding, and faster on GPI's 281-pixel frames (a prime
    size, where FFTs are slowest). With ``overwrite`` (float32 ``images`` only) the result is
    written over ``images``, which saves a copy of every frame.
    """
    n, ny, nx = images.shape
    size = 10.0 if fwhm_or_true is True else (nx / float(fwhm_or_true)) / (2 * np.sqrt(2 * np.log(2)))
    nan = np.isnan(images)
    filled = images if overwrite and images.dtype == np.float32 else images.astype(np.float32)
    _fill_nearest(filled, nan, threads)
    # float32 products (pyKLIP's result is float32 too): 2x faster than float64, and the
    # low-pass part differs by rounding only (about 1e-7 of the frame's values)
    low_y = _circular_gaussian(ny, size).astype(np.float32)
    low_x = _circular_gaussian(nx, size).astype(np.float32)

    def one(part: slice) -> None:
        batch = filled[part]
        batch -= np.matmul(np.matmul(low_y, batch), low_x.T)
        np.copyto(batch, np.float32(np.nan), where=nan[part])

    in_batches(one, n, threads)
    return filled, nan


def _fill_nearest(frames: np.ndarray, nan: np.ndarray, threads: int) -> None:
    """Each NaN pixel given the value of the nearest finite pixel of its frame (pyKLIP's
    nearest-neighbour search, once per distinct NaN pattern), in place."""
    from scipy.spatial import cKDTree

    n, ny, nx = frames.shape
    patterns: dict[bytes, list[int]] = {}
    for i in range(n):
        if nan[i].any():
            patterns.setdefault(np.packbits(nan[i]).tobytes(), []).append(i)
    y, x = np.indices((ny, nx))
    flat = frames.reshape(n, -1)
    for members in patterns.values():
        mask = nan[members[0]]
        good = np.array([x[~mask], y[~mask]]).T.astype(float)
        _, nearest = cKDTree(good).query(np.array([x[mask], y[mask]]).T.astype(float),
                                         workers=threads)
        target, source = np.flatnonzero(mask), np.flatnonzero(~mask)[nearest]
        rows = np.asarray(members)
        for lo in range(0, rows.size, BATCH):
            part = rows[lo:lo + BATCH, None]
            flat[part, target] = flat[part, source]


def _circular_gaussian(n: int, size: float) -> np.ndarray:
    """(n, n) circular convolution by the kernel whose transform is exp(-k^2 / size^2)."""
    k = np.fft.fftfreq(n) * n
    kernel = np.fft.ifft(np.exp(-(k ** 2) / size ** 2)).real
    return kernel[(np.arange(n)[:, None] - np.arange(n)[None, :]) % n]


def coefficients(images: np.ndarray, threads: int = 1,
                 nan: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Spline coefficients and NaN masks of every frame (``nan``, if known, is used as the mask
    and returned)."""
    coeffs = np.empty(images.shape, np.float32)
    nanmask = np.empty(images.shape, bool) if nan is None else nan

    def one(part: slice) -> None:
        known = None if nan is None else nan[part]
        coeffs[part], mask = resample.spline_coefficients(images[part], nan=known)
        if nan is None:
            nanmask[part] = mask

    in_batches(one, len(images), threads)
    return coeffs, nanmask


def park(images: np.ndarray, outputdir: str) -> np.ndarray:
    """The same frames as a read-only memory map of a temporary file (removed once opened)."""
    os.makedirs(outputdir or ".", exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=outputdir or ".", suffix=".npy") as tmp:
        np.save(tmp, images)
        tmp.flush()
        return np.load(tmp.name, mmap_mode="r")


def in_batches(work: Callable[[slice], None], n: int, threads: int) -> None:
    """``work(slice)`` for every batch of ``BATCH`` frames out of ``n``, over ``threads``
    threads (for steps whose numpy, BLAS or scipy calls release the GIL)."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(work, [slice(lo, lo + BATCH) for lo in range(0, n, BATCH)]))
