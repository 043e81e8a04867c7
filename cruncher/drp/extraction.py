"""The standard GPI extraction: a 3 x 1 box along each microspectrum, then 37 channels.

Assemble Spectral Datacube (reference section 4): for each lenslet, from the detector row of the
band's shortest wavelength, step one row at a time towards -Y; at row ``Y3`` the trace is at
``X3 = round(X0 + (Y0 - Y3) tan(tilt))`` and the flux is the sum of ``X3-1 .. X3+1``. cruncher
divides each sum by the fraction of a Gaussian trace profile (sigma ``PSFSIGX`` from the wavecal)
that the box holds given where the trace centre falls in the pixel, so the samples are fluxes,
not fluxes times a sub-pixel-dependent loss.

Interpolate Wavelength Axis: each row covers a known wavelength interval; the cumulative flux,
known exactly at row edges, is interpolated to the 37 channel edges with a cubic Hermite curve
whose slopes are the neighbouring rows' mean flux, and differenced. Every row's flux is kept
exactly (flux-conserving rebinning) while gradients within a row are followed. A channel touching
a bad (NaN) row is NaN, for the cube's bad-pixel step to fill.

Everything is vectorised over lenslets and written against the array module ``xp`` (numpy or
cupy); a plan depends only on the wavecal and is reused for every frame that shares it.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
from scipy.special import ndtr

from cruncher.instruments.gpi.optics import DETECTOR_SIZE, REFERENCE_COLS, REFERENCE_ROWS
from cruncher.instruments.gpi.wavecal import Wavecal, trace_columns, trace_rows

BOX_HALF_WIDTH = 1
ROW_MARGIN = 1


@dataclass(frozen=True)
class ExtractionPlan:
    """Where to sum for every lenslet, and how rows map onto channels."""

    iy: np.ndarray            # (N,) lenslet row in the cube
    ix: np.ndarray            # (N,) lenslet column in the cube
    pixel_index: np.ndarray   # (N, R, 3) flat detector index of each box pixel
    row_valid: np.ndarray     # (N, R) the whole box lies on the light-sensitive detector
    aperture: np.ndarray      # (N, R) fraction of the trace profile inside the box
    edge_position: np.ndarray  # (N, C+1) channel edges in rows from the top edge of row 0
    top: np.ndarray           # (N, 1) detector row of row 0
    n_rows: int

    @property
    def n_lenslets(self) -> int:
        return len(self.iy)


def make_plan(wavecal: Wavecal, channel_edges: np.ndarray,
              shape: tuple[int, int] = (DETECTOR_SIZE, DETECTOR_SIZE)) -> ExtractionPlan:
    """Prepare the extraction of ``channel_edges`` (microns) with ``wavecal`` (shift included)."""
    iy, ix = wavecal.lenslets()
    y0, x0, lam0, disp, tilt = (p[iy, ix][:, None] for p in wavecal.planes)
    y_first = trace_rows(y0, lam0, disp, tilt, channel_edges[0])
    y_last = trace_rows(y0, lam0, disp, tilt, channel_edges[-1])
    top = np.floor(y_first + 0.5) + ROW_MARGIN                  # row holding the shortest edge
    n_rows = int(np.max(top - np.floor(y_last + 0.5))) + 1 + ROW_MARGIN
    rows = top - np.arange(n_rows)[None, :]                       # (N, R)
    x_centre = trace_columns(x0, y0, tilt, rows)
    x3 = np.rint(x_centre)
    offset = x_centre - x3
    sigma = wavecal.psf_sigma_x
    half = BOX_HALF_WIDTH + 0.5
    aperture = ndtr((half - offset) / sigma) - ndtr((-half - offset) / sigma)
    cols = x3[:, :, None] + np.arange(-BOX_HALF_WIDTH, BOX_HALF_WIDTH + 1)[None, None, :]
    row_valid = ((rows >= REFERENCE_ROWS) & (rows <= shape[0] - 1 - REFERENCE_ROWS)
                 & (cols[:, :, 0] >= REFERENCE_COLS) & (cols[:, :, -1] <= shape[1] - 1 - REFERENCE_COLS))
    safe_rows = np.clip(rows, 0, shape[0] - 1)
    safe_cols = np.clip(cols, 0, shape[1] - 1)
    pixel_index = (safe_rows[:, :, None] * shape[1] + safe_cols).astype(np.int64)
    return ExtractionPlan(iy=iy, ix=ix, pixel_index=pixel_index, row_valid=row_valid,
                          aperture=aperture, top=top, n_rows=n_rows,
                          edge_position=_positions(wavecal, iy, ix, top, channel_edges))


def _positions(wavecal: Wavecal, iy, ix, top, channel_edges: np.ndarray) -> np.ndarray:
    y0, lam0, disp, tilt = (wavecal.planes[k][iy, ix][:, None] for k in (0, 2, 3, 4))
    return (top + 0.5) - trace_rows(y0, lam0, disp, tilt, channel_edges[None, :])


def channel_positions(plan: ExtractionPlan, wavecal: Wavecal, channel_edges: np.ndarray
                      ) -> np.ndarray:
    """(N, C+1) positions, in rows from the top of row 0, of another set of channel edges."""
    return _positions(wavecal, plan.iy, plan.ix, plan.top, channel_edges)


def box_samples(frame, plan: ExtractionPlan, xp: ModuleType = np):
    """(N, R) aperture-corrected 3 x 1 box sums along every trace; NaN off the detector or bad."""
    flat = xp.asarray(frame, dtype=xp.float64).ravel()
    sums = flat[xp.asarray(plan.pixel_index)].sum(axis=2)
    sums = sums / xp.asarray(plan.aperture)
    return xp.where(xp.asarray(plan.row_valid), sums, xp.nan)


def rebin(samples, plan: ExtractionPlan, xp: ModuleType = np, positions: np.ndarray | None = None):
    """(N, C) channel fluxes from (N, R) row samples, conserving flux; NaN where a row was bad.

    ``positions`` are the channel edges in rows (default: the plan's own channel grid).
    """
    bad = xp.isnan(samples)
    clean = xp.where(bad, 0.0, samples)
    n = samples.shape[0]
    zeros = xp.zeros((n, 1))
    cumulative = xp.concatenate([zeros, xp.cumsum(clean, axis=1)], axis=1)      # (N, R+1)
    bad_count = xp.concatenate([zeros, xp.cumsum(bad, axis=1)], axis=1)
    edges = plan.edge_position if positions is None else positions
    pos = xp.clip(xp.asarray(edges), 0.0, plan.n_rows - 1e-9)
    whole = xp.floor(pos).astype(xp.int64)
    frac = pos - whole
    take = xp.take_along_axis
    slopes = _edge_slopes(samples, xp)                                            # (N, R+1)
    c0, c1 = take(cumulative, whole, axis=1), take(cumulative, whole + 1, axis=1)
    m0, m1 = take(slopes, whole, axis=1), take(slopes, whole + 1, axis=1)
    t2, t3 = frac * frac, frac * frac * frac
    at_edge = ((2 * t3 - 3 * t2 + 1) * c0 + (t3 - 2 * t2 + frac) * m0
               + (-2 * t3 + 3 * t2) * c1 + (t3 - t2) * m1)
    flux = xp.diff(at_edge, axis=1)
    # rows a channel overlaps: from the row of its first edge to the row its last edge lies in
    # (an edge exactly on a row boundary does not reach into the next row)
    first = whole[:, :-1]
    last = xp.maximum(xp.ceil(pos[:, 1:]).astype(xp.int64) - 1, first)
    touched = take(bad_count, last + 1, axis=1) - take(bad_count, first, axis=1)
    return xp.where(touched > 0, xp.nan, flux)


def _edge_slopes(samples, xp: ModuleType):
    """Derivative of the cumulative flux at each row edge: the mean of the rows either side.

    A bad row does not lend its value: the good neighbour alone sets the slope.
    """
    n = samples.shape[0]
    pad = xp.full((n, 1), xp.nan)
    before = xp.concatenate([pad, samples], axis=1)    # row above each edge
    after = xp.concatenate([samples, pad], axis=1)     # row below each edge
    both = xp.stack([before, after])
    count = xp.sum(~xp.isnan(both), axis=0)
    total = xp.sum(xp.where(xp.isnan(both), 0.0, both), axis=0)
    return xp.where(count > 0, total / xp.maximum(count, 1), 0.0)


def assemble_cube(channels, plan: ExtractionPlan, size: int, xp: ModuleType = np):
    """(C, size, size) cube from (N, C) channel fluxes; NaN where no lenslet lands."""
    cube = xp.full((channels.shape[1], size, size), xp.nan, dtype=xp.float32)
    cube[:, xp.asarray(plan.iy), xp.asarray(plan.ix)] = channels.T.astype(xp.float32)
    return cube
