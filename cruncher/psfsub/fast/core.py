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
- the KLIP model is assembled in the space of reference frames (``n`` weights per cutoff, see
  :mod:`~cruncher.psfsub.fast.weights`) and expanded to pixels with one product for all science
  frames and cutoffs together;
- the smoothing is scipy's ``gaussian_filter`` as pyKLIP calls it per frame and box, called on
  stacks of frames and shared by nested boxes (:mod:`~cruncher.psfsub.fast.smoothing`).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from cruncher.psfsub.fast import gather
from cruncher.psfsub.fast.sections import Section, good_references, movement, take_columns
from cruncher.psfsub.fast.smoothing import Smoother
from cruncher.psfsub.fast.weights import (first_bad, in_pixel_space, klip_weights, lift,
                                          pixel_space_problem)
from cruncher.xp import to_numpy

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


def klip_section(aligned, sci_index: np.ndarray, section: Section, frames: Frames,
                 settings: Settings, wv_index: int, xp: ModuleType = np, somewhere=None,
                 smoothed=None):
    """Residuals (n_sci, n_cutoffs, p) of every science frame in one section (NaN where pyKLIP
    gives NaN), or None when no science frame has a reference.

    ``somewhere`` (flat, bool) may say which pixels of the image are finite in some frame
    (:func:`finite_somewhere`); pixels NaN in every frame add nothing to any product (pyKLIP
    zeroes them), so they are left out from the start. ``smoothed`` may give every frame's
    smoothed section pixels (:class:`~cruncher.psfsub.fast.smoothing.Smoother`); with
    ``corr_smooth`` and without it, the section's box is smoothed here.
    """
    flat = aligned.reshape(len(aligned), -1)
    p = section.pixels.size
    if somewhere is None:
        somewhere = finite_somewhere(aligned, xp)
    used = np.flatnonzero(to_numpy(somewhere[xp.asarray(section.pixels)]))
    centred, nanpix = _centred(flat, section.pixels[used], xp)
    cov = centred @ centred.T
    cov /= p - 1
    if settings.corr_smooth > 0 and smoothed is None:
        smoothed = Smoother(aligned, [section], xp).section(0)
    corr = _correlations(smoothed, cov, sci_index, settings, xp)
    moves = movement(section.radius, frames.parangs[sci_index], frames.parangs,
                     frames.wvs[sci_index], frames.wvs)
    good = good_references(moves, settings.minmove, settings.mode, frames.wvs[sci_index],
                           frames.filenums[sci_index], frames.wvs, frames.filenums,
                           settings.spectrum, np.full(len(sci_index), wv_index))
    # pyKLIP drops references with fewer than 5 finite pixels, counted after its NaNs became 0:
    # so every reference when the section has fewer than 5 pixels, and none otherwise
    good &= p >= 5
    chosen, nan_rows = _models(cov, corr, good, sci_index, settings, xp, centred, p - 1)
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
    residual[:, :, xp.asarray(used)] = fitted
    skipped = [row for row in range(len(sci_index)) if row not in chosen]
    for row, cutoffs in nan_rows.items():
        residual[row, cutoffs] = xp.nan
    residual[skipped] = xp.nan
    return residual


def _centred(flat, index: np.ndarray, xp: ModuleType):
    """Every frame's pixels ``index`` less their mean over its finite ones, NaN -> 0 (float64),
    and where they were NaN."""
    done = gather.centred_columns(flat, index) if xp is np else None
    if done is not None:
        return done
    centred = take_columns(flat, index, PRECISION, xp)
    nanpix = xp.isnan(centred)
    centred[nanpix] = 0
    finite = (~nanpix).sum(axis=1, keepdims=True)
    centred -= centred.sum(axis=1, keepdims=True) / xp.maximum(finite, 1)
    centred[nanpix] = 0
    return centred, nanpix


def finite_somewhere(aligned, xp: ModuleType = np, chunk: int = 64):
    """(Y * X,) bool: pixels finite in at least one frame."""
    out = xp.zeros(aligned.shape[1] * aligned.shape[2], bool)
    for lo in range(0, len(aligned), chunk):
        out |= ~xp.isnan(aligned[lo:lo + chunk].reshape(-1, out.size)).all(axis=0)
    return out


#: Frames centred at a time (float64) when correlating smoothed sections.
CORRELATE_CHUNK = 256


def _correlations(smooth, cov, sci_index, settings: Settings, xp: ModuleType):
    """(n_sci, F) correlation of each science frame with every frame, as pyKLIP ranks them: of
    the smoothed section pixels ``smooth`` (F, p; float32, centred here in float64 as numpy's
    ``corrcoef`` does, a chunk of frames at a time) with ``corr_smooth``, else of the covariance."""
    sci = xp.asarray(sci_index)
    if settings.corr_smooth > 0:
        science, _ = _centred_rows(smooth[sci], xp)
        corr = xp.empty((len(sci_index), len(smooth)), xp.float64)
        norm = xp.empty(len(smooth), xp.float64)
        for lo in range(0, len(smooth), CORRELATE_CHUNK):
            part, norm[lo:lo + CORRELATE_CHUNK] = _centred_rows(smooth[lo:lo + CORRELATE_CHUNK],
                                                                xp)
            corr[:, lo:lo + CORRELATE_CHUNK] = science @ part.T
        with np.errstate(divide="ignore", invalid="ignore"):
            corr /= norm[sci][:, None]
            corr /= norm[None, :]
    else:
        sd = xp.sqrt(xp.diag(cov))
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = cov[sci] / sd[sci][:, None] / sd[None, :]
    corr[xp.isnan(corr)] = 0
    return corr


def _centred_rows(rows, xp: ModuleType):
    """(rows less their means, in float64; the rows' norms after centring)."""
    out = xp.empty(rows.shape, xp.float64)
    norms = gather.centred_rows(rows, out) if xp is np else None
    if norms is None:
        out[:] = rows - rows.mean(axis=1, dtype=xp.float64, keepdims=True)
        norms = xp.sqrt(xp.einsum("ij,ij->i", out, out))
    return out, norms


def _models(cov, corr, good, sci_index, settings: Settings, xp: ModuleType, centred=None,
            divisor: float = 1.0):
    """Per science frame: its references and their weights (n_refs, n_cutoffs) in the model.
    Given the section's ``centred`` pixels (the covariance being ``centred centred' /
    divisor``), a science frame with more references than pixels is solved in the space of the
    pixels (:func:`~cruncher.psfsub.fast.weights.in_pixel_space`)."""
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
    subs, crosses, cutoffs, lifts = [], [], [], []
    for row, refs in picks.items():
        index = xp.asarray(refs)
        cutoffs.append(np.clip(settings.numbasis - 1, 0, refs.size - 1))
        if centred is not None and in_pixel_space(refs.size, centred.shape[1], cutoffs[-1]):
            block = centred[index]
            sub, cross = pixel_space_problem(block, centred[int(sci_index[row])], divisor)
            subs.append(sub)
            crosses.append(cross)
            lifts.append(block)
            continue
        subs.append(_submatrix(cov, index, xp))
        crosses.append(cov[index, int(sci_index[row])])      # = refs . science / (p-1)
        lifts.append(None)
    chosen, nan_rows = {}, {}
    for (row, refs), cut, block, (weights, values) in zip(
            picks.items(), cutoffs, lifts, klip_weights(subs, crosses, cutoffs, xp,
                                                        overwrite=True)):
        chosen[row] = (refs, weights if block is None else lift(block, weights))
        bad = first_bad(values)
        if bad is not None:
            nan_rows[row] = np.flatnonzero(cut >= bad)
    return chosen, nan_rows


def _submatrix(cov, index, xp: ModuleType):
    """``cov[ix_(index, index)]``: compiled on the CPU, else whole rows first, then the columns
    out of them (3x faster than ``ix_``)."""
    sub = gather.submatrix(cov, index) if xp is np else None
    return sub if sub is not None else xp.take(xp.take(cov, index, axis=0), index, axis=1)
