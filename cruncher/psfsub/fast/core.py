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
- the smoothing is two small matrix products per frame, the same linear operator as scipy's
  ``gaussian_filter`` on the bounding box (reflected edges, NaNs spreading over its support).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from cruncher.psfsub.fast.sections import Section, good_references, movement

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


def smoothing_operator(size: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """scipy's 1-D Gaussian filter (reflect mode) as a matrix, and its support (0/1)."""
    from scipy import ndimage

    op = ndimage.gaussian_filter1d(np.eye(size), sigma, axis=0, mode="reflect")
    return op.astype(np.float32), (op > 0).astype(np.float32)


def smoothed_section(aligned, section: Section, sigma: float, xp: ModuleType):
    """Each frame's section after pyKLIP's smoothing of the section's box; NaN -> 0. (F, p)."""
    y0, y1, x0, x1 = section.box
    crop = aligned[:, y0:y1 + 1, x0:x1 + 1]
    gy, sy = (xp.asarray(a) for a in smoothing_operator(y1 - y0 + 1, sigma))
    gx, sx = (xp.asarray(a) for a in smoothing_operator(x1 - x0 + 1, sigma))
    nan = xp.isnan(crop)
    smooth = xp.matmul(xp.matmul(gy, xp.where(nan, 0, crop)), gx.T)
    if bool(nan.any()):
        spread = xp.matmul(xp.matmul(sy, nan.astype(xp.float32)), sx.T)
        smooth[spread > 0] = 0
    ys, xs = np.divmod(section.pixels, aligned.shape[2])
    flat = (ys - y0) * (x1 - x0 + 1) + (xs - x0)
    return smooth.reshape(len(crop), -1)[:, xp.asarray(flat)]


def _top_eigenpairs(covs, count: int, xp: ModuleType):
    """Largest ``count`` eigenpairs (descending) of each symmetric matrix in a list.

    Matrices of one size go to LAPACK's divide and conquer (``syevd``) as one stack: for 300 x 300
    it is faster than computing only the 50 wanted pairs with ``syevr``, and numpy and cupy share
    the call.
    """
    out: list = [None] * len(covs)
    sizes: dict[int, list[int]] = {}
    for i, cov in enumerate(covs):
        sizes.setdefault(cov.shape[0], []).append(i)
    for members in sizes.values():
        values, vectors = xp.linalg.eigh(xp.stack([covs[i] for i in members]))
        for i, v, w in zip(members, values, vectors):
            out[i] = (v[::-1][:count], w[:, ::-1][:, :count])
    return out


def klip_section(aligned, sci_index: np.ndarray, section: Section, frames: Frames,
                 settings: Settings, wv_index: int, xp: ModuleType = np):
    """Residuals (n_sci, n_cutoffs, p) of every science frame in one section (NaN where pyKLIP
    gives NaN), or None when no science frame has a reference."""
    pix = xp.asarray(section.pixels)
    flat = aligned.reshape(len(aligned), -1)
    data = flat[:, pix].astype(PRECISION)
    p = data.shape[1]
    nanpix = xp.isnan(data)
    centred = data - xp.nanmean(xp.where(nanpix.all(axis=1, keepdims=True), 0, data), axis=1,
                                keepdims=True)
    centred[nanpix] = 0
    used = xp.asarray(~nanpix.all(axis=0))       # all-NaN pixels add nothing to the products
    cov = centred[:, used] @ centred[:, used].T / (p - 1)
    corr = _correlations(aligned, cov, sci_index, section, settings, xp)
    moves = movement(section.radius, frames.parangs[sci_index], frames.parangs,
                     frames.wvs[sci_index], frames.wvs)
    good = good_references(moves, settings.minmove, settings.mode, frames.wvs[sci_index],
                           frames.filenums[sci_index], frames.wvs, frames.filenums,
                           settings.spectrum, np.full(len(sci_index), wv_index))
    chosen, weights, nan_rows = _models(cov, corr, good, sci_index, settings, p, xp)
    if not chosen:
        return None
    # residual = science - (references' combination), for every cutoff of every science frame
    combos = xp.zeros((len(sci_index), len(settings.numbasis), len(aligned)), xp.float64)
    for row, (refs, w) in chosen.items():
        combos[row][:, xp.asarray(refs)] = w.T
    model = (combos.reshape(-1, len(aligned)) @ centred).reshape(len(sci_index), -1, p)
    sci = centred[xp.asarray(sci_index)]
    residual = (sci[:, None, :] - model).astype(xp.float32)
    residual[xp.broadcast_to(nanpix[xp.asarray(sci_index)][:, None, :], residual.shape)] = xp.nan
    skipped = [row for row in range(len(sci_index)) if row not in chosen]
    for row, cutoffs in nan_rows.items():
        residual[row, cutoffs] = xp.nan
    residual[skipped] = xp.nan
    return residual


def _correlations(aligned, cov, sci_index, section, settings: Settings, xp: ModuleType):
    """(n_sci, F) correlation of each science frame with every frame, as pyKLIP ranks them."""
    if settings.corr_smooth > 0:
        smooth = smoothed_section(aligned, section, 1.0, xp).astype(xp.float64)
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


def _models(cov, corr, good, sci_index, settings: Settings, p: int, xp: ModuleType):
    """Per science frame: its references and their weights (n_refs, n_cutoffs) in the model."""
    corr_h = corr.get() if hasattr(corr, "get") else corr
    picks: dict[int, np.ndarray] = {}
    for row in range(len(sci_index)):
        refs = np.flatnonzero(good[row])
        if refs.size < 1:
            continue
        if refs.size > settings.maxnumbasis:
            refs = refs[np.argsort(corr_h[row, refs])[-settings.maxnumbasis:]]
        picks[row] = refs
    if not picks:
        return {}, None, {}
    n_max = int(np.max(settings.numbasis))
    subs = [cov[xp.asarray(refs)][:, xp.asarray(refs)] for refs in picks.values()]
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
            first_bad = int(np.flatnonzero(xp.asnumpy(bad) if xp is not np else bad)[0])
            nan_rows[row] = np.flatnonzero(cutoffs >= first_bad)
    return chosen, None, nan_rows
