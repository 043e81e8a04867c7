"""KLIP of every science frame at one wavelength, one section at a time, as pyKLIP defines it.

For a section, pyKLIP (``_klip_section_multifile`` and ``klip.klip_math``) takes the aligned
frames' pixels, subtracts each frame's mean and zeroes its NaNs, ranks references by their
correlation with the science frame after a 1-pixel Gaussian smoothing of the section's bounding
box, keeps the ``maxnumbasis`` most correlated frames that moved enough, and projects the science
frame on the first K eigenvectors of their covariance. Here the same numbers are computed with
fewer operations:

- the covariance of all frames is one matrix product per section, shared by every science frame
  (each science frame's covariance is a sub-matrix of it, and its products with the references
  are a column of it);
- only the top ``max(numbasis)`` eigenpairs are computed, and the KLIP model is assembled in the
  space of reference frames (``n`` numbers per cutoff) and expanded to pixels with one product for
  all science frames and cutoffs together;
- the smoothing is scipy's ``gaussian_filter`` called once on the stack of all frames' bounding
  boxes (reflected at the box edges, NaNs spreading over its support), as pyKLIP calls it per frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np

from cruncher.psfsub.fast.sections import Section, good_references, movement
from cruncher.xp import ndimage_module, to_numpy

#: Covariances and eigenvectors are float64: in float32 the KL-50 residual moved by 21 % of its
#: RMS on the test sequence (the small eigenvalues are lost), in float64 by < 1e-3.
PRECISION = np.float64


@dataclass(frozen=True)
class Frames:
    """What KLIP needs to know about every frame (pyKLIP keeps these as float32)."""

    parangs: np.ndarray
    wvs: np.ndarray
    filenums: np.ndarray


@dataclass(frozen=True)
class Settings:
    mode: str
    numbasis: np.ndarray
    maxnumbasis: int
    minmove: float
    corr_smooth: float = 1.0
    spectrum: np.ndarray | None = None


#: Frames smoothed at a time: bounds the box stacks (the outer sections' boxes are large).
SMOOTH_CHUNK = 128


def smoothed_section(aligned, section: Section, sigma: float, xp: ModuleType):
    """Each frame's section after pyKLIP's smoothing of the section's box; NaN -> 0. (F, p)
    float64.

    The same call as pyKLIP's (``gaussian_filter`` of each frame's box, reflected at the box's
    edges, NaNs spreading), made for stacks of boxes."""
    y0, y1, x0, x1 = section.box
    ys, xs = np.divmod(section.pixels, aligned.shape[2])
    flat = xp.asarray((ys - y0) * (x1 - x0 + 1) + (xs - x0))
    gaussian = ndimage_module(xp).gaussian_filter
    out = xp.empty((len(aligned), section.pixels.size), xp.float64)
    for lo in range(0, len(aligned), SMOOTH_CHUNK):
        boxes = gaussian(aligned[lo:lo + SMOOTH_CHUNK, y0:y1 + 1, x0:x1 + 1], (0, sigma, sigma))
        out[lo:lo + SMOOTH_CHUNK] = boxes.reshape(len(boxes), -1)[:, flat]
    out[xp.isnan(out)] = 0
    return out


def _top_eigenpairs(covs, count: int, xp: ModuleType):
    """Largest ``count`` eigenpairs (descending) of each symmetric matrix in a list.

    On the CPU each matrix goes to :func:`_top_eigenpairs_lapack`; on a GPU matrices of one size
    go to cupy's batched ``eigh`` as one stack.
    """
    if xp is np:
        return [_top_eigenpairs_lapack(cov, count) for cov in covs]
    out: list = [None] * len(covs)
    sizes: dict[int, list[int]] = {}
    for i, cov in enumerate(covs):
        sizes.setdefault(cov.shape[0], []).append(i)
    for members in sizes.values():
        values, vectors = xp.linalg.eigh(xp.stack([covs[i] for i in members]))
        for i, v, w in zip(members, values, vectors):
            out[i] = (v[::-1][:count], w[:, ::-1][:, :count])
    return out


@lru_cache(maxsize=None)
def _tridiagonal_workspace(n: int) -> int:
    from scipy.linalg import lapack

    return int(lapack.dsytrd_lwork(n, lower=1)[0])


def _top_eigenpairs_lapack(cov: np.ndarray, count: int):
    """The top ``count`` eigenpairs as LAPACK's ``syevr`` finds them (pyKLIP calls it through
    ``scipy.linalg.eigh(subset_by_index=...)``), in its three steps: the blocked tridiagonal
    reduction (``sytrd``), relatively robust representations for the wanted pairs only
    (``stemr``), and the back-transformation of only those vectors (``ormqr``, as ``ormtr``
    does). Faster per matrix than divide and conquer for all pairs (``syevd``: 4.9 against 5.3 ms
    for 300 x 300 in the 20-cube profile; the whole job's gain is within this machine's
    run-to-run spread) and than scipy's ``syevr``, whose small default workspace leaves the
    reduction unblocked."""
    from scipy.linalg import eigh_tridiagonal, lapack

    n = cov.shape[0]
    k = min(count, n)
    if n < 3:
        values, vectors = np.linalg.eigh(cov)
        return values[::-1][:k], vectors[:, ::-1][:, :k]
    # a copy in Fortran order (the matrix is symmetric) that LAPACK may overwrite
    reduced, diag, off, tau, info = lapack.dsytrd(np.array(cov, order="F"), lower=1,
                                                  lwork=_tridiagonal_workspace(n), overwrite_a=1)
    values, vectors = eigh_tridiagonal(diag, off, select="i", select_range=(n - k, n - 1),
                                       check_finite=False, lapack_driver="stemr")
    vectors[1:], _, info = lapack.dormqr("L", "N", reduced[1:, :n - 1], tau, vectors[1:],
                                         lwork=64 * k, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"ormqr failed ({info})")
    return values[::-1], vectors[:, ::-1]


def klip_section(aligned, sci_index: np.ndarray, section: Section, frames: Frames,
                 settings: Settings, wv_index: int, xp: ModuleType = np):
    """Residuals (n_sci, n_cutoffs, p) of every science frame in one section (NaN where pyKLIP
    gives NaN), or None when no science frame has a reference."""
    flat = aligned.reshape(len(aligned), -1)
    p = section.pixels.size
    pixels = xp.asarray(section.pixels)
    # pixels NaN in every frame add nothing to any product (pyKLIP zeroes them): drop them early
    used = xp.flatnonzero(~xp.isnan(flat[:, pixels]).all(axis=0))
    centred = flat[:, pixels[used]].astype(PRECISION)
    nanpix = xp.isnan(centred)
    centred[nanpix] = 0
    finite = (~nanpix).sum(axis=1, keepdims=True)
    centred -= centred.sum(axis=1, keepdims=True) / xp.maximum(finite, 1)
    centred[nanpix] = 0
    cov = centred @ centred.T / (p - 1)
    corr = _correlations(aligned, cov, sci_index, section, settings, xp)
    moves = movement(section.radius, frames.parangs[sci_index], frames.parangs,
                     frames.wvs[sci_index], frames.wvs)
    good = good_references(moves, settings.minmove, settings.mode, frames.wvs[sci_index],
                           frames.filenums[sci_index], frames.wvs, frames.filenums,
                           settings.spectrum, np.full(len(sci_index), wv_index))
    # pyKLIP drops references with fewer than 5 finite pixels, counted after its NaNs became 0:
    # so every reference when the section has fewer than 5 pixels, and none otherwise
    good &= p >= 5
    chosen, nan_rows = _models(cov, corr, good, sci_index, settings, xp)
    if not chosen:
        return None
    # residual = science - (references' combination), for every cutoff of every science frame
    combos = xp.zeros((len(sci_index), len(settings.numbasis), len(aligned)), xp.float64)
    for row, (refs, w) in chosen.items():
        combos[row][:, xp.asarray(refs)] = w.T
    model = (combos.reshape(-1, len(aligned)) @ centred).reshape(len(sci_index), -1, used.size)
    sci = xp.asarray(sci_index)
    residual = xp.full((len(sci_index), len(settings.numbasis), p), xp.nan, xp.float32)
    fitted = centred[sci][:, None, :] - model
    fitted[xp.broadcast_to(nanpix[sci][:, None, :], fitted.shape)] = xp.nan
    residual[:, :, used] = fitted
    skipped = [row for row in range(len(sci_index)) if row not in chosen]
    for row, cutoffs in nan_rows.items():
        residual[row, cutoffs] = xp.nan
    residual[skipped] = xp.nan
    return residual


def _correlations(aligned, cov, sci_index, section, settings: Settings, xp: ModuleType):
    """(n_sci, F) correlation of each science frame with every frame, as pyKLIP ranks them."""
    if settings.corr_smooth > 0:
        smooth = smoothed_section(aligned, section, 1.0, xp)
        smooth -= smooth.mean(axis=1, keepdims=True)
        norm = xp.sqrt(xp.einsum("ij,ij->i", smooth, smooth))
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = (smooth[xp.asarray(sci_index)] @ smooth.T) / norm[xp.asarray(sci_index)][:, None]
            corr /= norm[None, :]
    else:
        sd = xp.sqrt(xp.diag(cov))
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = cov[xp.asarray(sci_index)] / sd[xp.asarray(sci_index)][:, None] / sd[None, :]
    corr[xp.isnan(corr)] = 0
    return corr


def _models(cov, corr, good, sci_index, settings: Settings, xp: ModuleType):
    """Per science frame: its references and their weights (n_refs, n_cutoffs) in the model."""
    corr_h = to_numpy(corr)
    picks: dict[int, np.ndarray] = {}
    for row in range(len(sci_index)):
        refs = np.flatnonzero(good[row])
        if refs.size < 1:
            continue
        if refs.size > settings.maxnumbasis:
            refs = refs[np.argsort(corr_h[row, refs])[-settings.maxnumbasis:]]
        picks[row] = refs
    if not picks:
        return {}, {}
    n_max = int(np.max(settings.numbasis))
    subs = [cov[xp.ix_(xp.asarray(refs), xp.asarray(refs))] for refs in picks.values()]
    pairs = _top_eigenpairs(subs, n_max, xp)
    chosen, nan_rows = {}, {}
    for (row, refs), (values, vectors) in zip(picks.items(), pairs):
        n = refs.size
        cutoffs = np.clip(settings.numbasis - 1, 0, n - 1)
        k = int(cutoffs.max()) + 1
        values, vectors = values[:k], vectors[:, :k]
        cross = cov[xp.asarray(refs), int(sci_index[row])]      # = refs . science / (p-1)
        bad = values <= 0
        with np.errstate(divide="ignore", invalid="ignore"):
            coef = (vectors.T @ cross) / values
        coef = xp.where(bad, 0, coef)
        weights = xp.cumsum(vectors * coef[None, :], axis=1)[:, xp.asarray(cutoffs)]
        chosen[row] = (refs, weights)
        if bool(bad.any()):
            first_bad = int(np.flatnonzero(to_numpy(bad))[0])
            nan_rows[row] = np.flatnonzero(cutoffs >= first_bad)
    return chosen, nan_rows
