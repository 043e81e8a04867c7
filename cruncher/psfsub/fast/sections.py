"""KLIP's geometry and reference criteria, exactly as pyKLIP's ``klip_parallelized`` sets them.

Annuli (pyKLIP's ``define_annuli_bounds``; the last one reaches the edge of the image when no
outer working angle is given), subsections in azimuth, the pixels of each section, and which
frames may serve as references for a science frame: enough movement of a planet (or, with a
spectral template, little enough of the template's flux at the planet's place, pyKLIP's
methane-weighted criterion), the same wavelength for ADI, the same exposure for SDI.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np


@dataclass(frozen=True)
class Section:
    rad: tuple[float, float]
    phi: tuple[float, float]
    pixels: np.ndarray          # flat indices into the image
    box: tuple[int, int, int, int]   # ymin, ymax, xmin, xmax (inclusive) of the section
    width: int                  # of the image

    @property
    def radius(self) -> float:
        return 0.5 * (self.rad[0] + self.rad[1])


def outer_working_angle(image: np.ndarray, center) -> float:
    """pyKLIP's OWA when none is given: the 1st percentile of the NaN pixels' distance."""
    y, x = np.indices(image.shape, dtype=float)
    nan = np.isnan(image)
    r2 = (x - center[0]) ** 2 + (y - center[1]) ** 2
    return float(np.sqrt(r2.max() if not nan.any() else np.percentile(r2[nan], 1)))


def sections(shape: tuple[int, int], center, iwa: float, owa: float | None, annuli: int,
             subsections: int, spacing: str, first_image: np.ndarray | None = None,
             first_center=None) -> list[Section]:
    """Every (annulus, subsection) with at least two pixels, in pyKLIP's order."""
    from pyklip.klip import define_annuli_bounds

    full_image = owa is None
    if full_image:
        owa = outer_working_angle(first_image, first_center)
    bounds = define_annuli_bounds(annuli, iwa, owa, spacing)
    if full_image:
        bounds[annuli - 1] = (bounds[annuli - 1][0], shape[0])
    dphi = 2 * np.pi / subsections
    phis = [[dphi * i - np.pi, dphi * (i + 1) - np.pi] for i in range(subsections)]
    phis[-1][1] = np.pi
    y, x = np.meshgrid(np.arange(shape[0] * 1.0), np.arange(shape[1] * 1.0), indexing="ij")
    x, y = x.ravel(), y.ravel()
    r = np.sqrt((x - center[0]) ** 2 + (y - center[1]) ** 2)
    phi = (np.arctan2(y - center[1], x - center[0]) % (2 * np.pi)) - np.pi
    out = []
    for lo_phi, hi_phi in phis:
        for lo_r, hi_r in bounds:
            idx = np.where((r >= lo_r) & (r < hi_r) & (phi >= lo_phi) & (phi < hi_phi))[0]
            if idx.size <= 1:
                continue
            ys, xs = np.divmod(idx, shape[1])
            out.append(Section((lo_r, hi_r), (lo_phi, hi_phi), idx,
                               (int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())),
                               shape[1]))
    return out


def runs(index: np.ndarray, destination: np.ndarray | None = None) -> np.ndarray:
    """(source start, destination start, length) of each run of consecutive values in a sorted
    index, copied to consecutive positions (or to ``destination``, broken where it jumps too): a
    section is one run per image row, or two where it crosses the inner hole."""
    index = np.asarray(index)
    if index.size == 0:     # a section with no pixel finite in any frame (an image corner)
        return np.empty((0, 3), np.int64)
    jumps = np.diff(index) != 1
    if destination is not None:
        jumps |= np.diff(destination) != 1
    breaks = np.flatnonzero(jumps) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [index.size]])
    to = starts if destination is None else np.asarray(destination)[starts]
    return np.stack([index[starts], to, ends - starts], axis=1).astype(np.int64)


def take_columns(array, index: np.ndarray, dtype, xp: ModuleType = np):
    """``array[:, index]`` as ``dtype`` (``index`` sorted); on the CPU copied run by run, several
    times faster than a fancy index for sections' pixels (with numba,
    :func:`~cruncher.psfsub.fast.gather.centred_columns` gathers instead)."""
    if xp is not np:
        return array[:, xp.asarray(index)].astype(dtype)
    out = np.empty((array.shape[0], index.size), dtype)
    copy_columns(out, array, runs(index))
    return out


def copy_columns(out, array, column_runs: np.ndarray) -> None:
    """``out[:, d:d + n] = array[:, s:s + n]`` for every run (s, d, n) of :func:`runs`."""
    for source, destination, length in column_runs.tolist():
        out[:, destination:destination + length] = array[:, source:source + length]


def movement(radius: float, parang, parangs, wavelength, wavelengths) -> np.ndarray:
    """pyKLIP's ``estimate_movement`` for ADI+SDI, vectorised over science frames (rows)."""
    dtheta = np.radians(np.asarray(parang)[:, None] - parangs[None, :])
    r = radius * (np.asarray(wavelength)[:, None] / wavelengths[None, :])
    return np.sqrt((r * np.cos(dtheta) - radius) ** 2 + (r * np.sin(dtheta)) ** 2)


def good_references(moves: np.ndarray, minmove: float, mode: str, sci_wvs, sci_filenums,
                    wvs, filenums, spectrum=None, sci_wv_index=None) -> np.ndarray:
    """(n_sci, n_frames) bool: which frames each science frame may use (pyKLIP's criteria)."""
    if spectrum is None:
        good = moves >= minmove
    else:
        from scipy.stats import norm

        width = minmove / 2.355
        good = (spectrum[None, :] * norm.sf(moves - width, scale=width)
                <= 0.1 * spectrum[np.asarray(sci_wv_index)][:, None])
    mode = mode.upper()
    if "SDI" not in mode:
        good &= wvs[None, :] == np.asarray(sci_wvs)[:, None]
    if "ADI" not in mode:
        good &= filenums[None, :] == np.asarray(sci_filenums)[:, None]
    return good
