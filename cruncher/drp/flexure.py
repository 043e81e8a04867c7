"""Measuring the flexure shift of the microspectra from an arc-lamp snapshot.

Quick Wavelength Solution Update: the master wavecal says where every argon line should fall;
the arc shows where they are. The shift ``(dx, dy)`` common to all traces is measured in two
parts, iterated:

- across the dispersion (x): the flux-weighted centroid of each trace in a 5-column window about
  its predicted centre, the median over lenslets;
- along the dispersion (y): a least-squares fit of every lenslet's row profile by the lamp's lines
  (pixel-integrated Gaussians at the predicted rows plus ``dy``, a common width, one amplitude per
  line per lenslet), minimising the total squared residual over ``dy`` and the width.

Lines closer than ``BLEND_PX`` are fitted as one feature with the lamp's relative strengths.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import ndtr

from cruncher.drp.extraction import box_samples, make_plan
from cruncher.errors import BadInputError
from cruncher.instruments.gpi.wavecal import Wavecal, trace_columns, trace_rows

_log = logging.getLogger(__name__)
BLEND_PX = 1.6
X_WINDOW = np.arange(-2, 3)
MAX_SHIFT_PX = 4.0


@dataclass(frozen=True)
class FlexureResult:
    dx: float
    dy: float
    line_sigma_px: float
    lenslets: int
    residual_rms: float


def measure_shift(frame: np.ndarray, master: Wavecal, lines: list[tuple[float, float]], *,
                  stride: int = 9, iterations: int = 2) -> FlexureResult:
    """The ``(dx, dy)`` that moves ``master``'s traces onto the arc ``frame``.

    Parameters
    ----------
    frame
        Dark-subtracted arc frame; bad pixels NaN.
    lines
        (wavelength um, relative strength) of the lamp lines in the band.
    stride
        Use every ``stride``-th lenslet (thousands are plenty).
    """
    if not lines:
        raise BadInputError("<arc>", f"no lamp lines known in band {master.band}")
    keep = np.zeros(master.valid.shape, bool)
    iy, ix = master.lenslets()
    keep[iy[::stride], ix[::stride]] = True
    subset = Wavecal(planes=np.where(keep, master.planes, np.nan), band=master.band,
                     psf_sigma_x=master.psf_sigma_x)
    dx = _converge_dx(frame, subset, 0.0, 0.0)
    dy, sigma, rms, used = _measure_dy(frame, subset.shifted(dx, 0.0), lines, 0.0, 0.8)
    for _ in range(iterations - 1):
        dx = _converge_dx(frame, subset, dx, dy)
        dy, sigma, rms, used = _measure_dy(frame, subset.shifted(dx, 0.0), lines, dy, sigma)
    if abs(dx) > MAX_SHIFT_PX or abs(dy) > MAX_SHIFT_PX:
        raise BadInputError("<arc>", f"flexure shift ({dx:.2f}, {dy:.2f}) px is implausible: "
                                     "is this an arc of the right band?")
    _log.info("flexure from arc: dx=%.3f dy=%.3f px (line sigma %.2f px, %d lenslets)",
              dx, dy, sigma, used)
    return FlexureResult(dx=dx, dy=dy, line_sigma_px=sigma, lenslets=used, residual_rms=rms)


def _converge_dx(frame: np.ndarray, wavecal: Wavecal, dx: float, dy: float,
                 tolerance: float = 0.002, max_steps: int = 8) -> float:
    """Recentre the x window on the measured centroid until it stops moving."""
    for _ in range(max_steps):
        step = _measure_dx(frame, wavecal.shifted(dx, dy))
        dx += step
        if abs(step) < tolerance or abs(dx) > MAX_SHIFT_PX:
            break
    return dx


def _measure_dx(frame: np.ndarray, wavecal: Wavecal) -> float:
    """Median over lenslets of the trace's flux-weighted x offset from its predicted centre."""
    iy, ix = wavecal.lenslets()
    y0, x0, lam0, disp, tilt = (p[iy, ix][:, None] for p in wavecal.planes)
    lam_lo, lam_hi = np.nanmin(lam0) - 8 * np.nanmean(disp), np.nanmax(lam0) + 8 * np.nanmean(disp)
    top = np.floor(trace_rows(y0, lam0, disp, tilt, lam_lo) + 0.5)
    n_rows = int(np.max(top - np.floor(trace_rows(y0, lam0, disp, tilt, lam_hi) + 0.5))) + 1
    rows = top - np.arange(n_rows)[None, :]
    x_c = trace_columns(x0, y0, tilt, rows)
    cols = np.rint(x_c)[:, :, None] + X_WINDOW[None, None, :]
    inside = ((rows >= 0) & (rows < frame.shape[0]))[:, :, None] & (cols >= 0) & (cols < frame.shape[1])
    values = np.where(inside, frame[np.clip(rows, 0, frame.shape[0] - 1).astype(int)[:, :, None],
                                    np.clip(cols, 0, frame.shape[1] - 1).astype(int)], np.nan)
    values = np.where(np.isfinite(values), values, 0.0)
    flux = values.sum(axis=(1, 2))
    offset = (values * (cols - x_c[:, :, None])).sum(axis=(1, 2))
    good = flux > 0.2 * np.median(flux[flux > 0]) if np.any(flux > 0) else flux > 0
    if good.sum() < 50:
        raise BadInputError("<arc>", "too few illuminated traces to measure the flexure")
    return float(np.median(offset[good] / flux[good]))


def _features(lines: list[tuple[float, float]], dispersion: float) -> list[list[tuple[float, float]]]:
    """Lines grouped into features: lines closer than BLEND_PX are fitted together."""
    groups: list[list[tuple[float, float]]] = []
    for wavelength, strength in sorted(lines):
        if groups and (wavelength - groups[-1][-1][0]) / dispersion < BLEND_PX:
            groups[-1].append((wavelength, strength))
        else:
            groups.append([(wavelength, strength)])
    return groups


def _measure_dy(frame: np.ndarray, wavecal: Wavecal, lines, dy0: float, sigma0: float):
    lam = np.array([w for w, _ in lines])
    edges = np.array([lam.min() - 0.03, lam.max() + 0.03])
    plan = make_plan(wavecal, np.linspace(edges[0], edges[1], 2))
    samples = box_samples(frame, plan)                                       # (N, R)
    iy, ix = plan.iy, plan.ix
    y0, lam0, disp, tilt = (wavecal.planes[k][iy, ix][:, None] for k in (0, 2, 3, 4))
    top = np.floor(trace_rows(y0, lam0, disp, tilt, edges[0]) + 0.5) + 1
    rows = top - np.arange(plan.n_rows)[None, :]
    ok = np.isfinite(samples)
    data = np.where(ok, samples, 0.0)
    groups = _features(lines, float(np.nanmean(wavecal.dispersion)))
    predicted = [(trace_rows(y0, lam0, disp, tilt, np.array([w for w, _ in g])[None, :]),
                  np.array([s for _, s in g])) for g in groups]

    def chi2(dy: float, sigma: float) -> float:
        design = np.stack([_feature_profile(rows, pos + dy, weights, sigma)
                           for pos, weights in predicted], axis=2) * ok[:, :, None]  # (N, R, F)
        normal = np.einsum("nrf,nrg->nfg", design, design) + 1e-9 * np.eye(len(groups))
        rhs = np.einsum("nrf,nr->nf", design, data)
        amps = np.linalg.solve(normal, rhs[:, :, None])[:, :, 0]
        resid = data - np.einsum("nrf,nf->nr", design, amps)
        return float(np.sum(resid ** 2))

    dy, sigma = dy0, sigma0
    first = dy0 == 0.0
    for _ in range(2):
        lo, hi, n = (-MAX_SHIFT_PX, MAX_SHIFT_PX, 17) if first else (dy - 0.2, dy + 0.2, 5)
        dy = _minimise(lambda d: chi2(d, sigma), lo, hi, n)
        first = False
        sigma = float(minimize_scalar(lambda s: chi2(dy, s), bounds=(0.3, 2.5),
                                      method="bounded", options={"xatol": 1e-3}).x)
    rms = np.sqrt(chi2(dy, sigma) / max(ok.sum(), 1))
    return dy, sigma, float(rms), int(plan.n_lenslets)


def _feature_profile(rows: np.ndarray, positions: np.ndarray, weights: np.ndarray,
                     sigma: float) -> np.ndarray:
    """(N, R) pixel-integrated profile of a feature (one or more lines with fixed ratios)."""
    out = np.zeros(rows.shape)
    for k, weight in enumerate(weights / weights.sum()):
        centre = positions[:, k:k + 1]
        out += weight * (ndtr((rows + 0.5 - centre) / sigma) - ndtr((rows - 0.5 - centre) / sigma))
    return out


def _minimise(fn, lo: float, hi: float, n: int) -> float:
    """Minimise a smooth 1-D function: scan ``n`` points over [lo, hi], then Brent's method."""
    grid = np.linspace(lo, hi, n)
    best = grid[int(np.argmin([fn(g) for g in grid]))]
    step = grid[1] - grid[0]
    result = minimize_scalar(fn, bounds=(best - step, best + step), method="bounded",
                             options={"xatol": 1e-4})
    return float(result.x)
