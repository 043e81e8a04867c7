"""Single-frame contrast: how faint a point source one cube could reveal, by separation.

The high-passed cube is averaged over wavelength, the satellite spots' tracks are masked, and in
2-pixel annuli about the star the standard deviation is measured; five times it, divided by the
star's peak (the mean satellite-spot peak over the spot-to-star ratio), is the 5-sigma contrast.
"""
from __future__ import annotations

import warnings

import numpy as np

from cruncher.instruments.gpi import optics

ANNULUS_PX = 2.0


def single_frame(filtered: np.ndarray, centre: tuple[float, float], spot_positions: np.ndarray,
                 spot_fluxes: np.ndarray, band: str) -> tuple[np.ndarray, np.ndarray]:
    """(separations in arcsec, 5-sigma contrast) from a high-passed cube."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        image = np.nanmean(filtered, axis=0)
        star_peak = np.nanmean(spot_fluxes) / optics.SPOT_RATIO[band]
    ny, nx = image.shape
    y, x = np.mgrid[0:ny, 0:nx]
    radius = np.hypot(x - centre[0], y - centre[1])
    masked = _mask_spot_tracks(image, x, y, spot_positions)
    inner = optics.fpm_radius_lenslets(band) + 2.0
    outer = float(np.nanmax(np.where(np.isfinite(masked), radius, np.nan)))
    seps = np.arange(inner, outer - ANNULUS_PX, 1.0)
    sigma = np.full(seps.shape, np.nan)
    for i, r in enumerate(seps):
        ring = masked[(radius >= r - ANNULUS_PX / 2) & (radius < r + ANNULUS_PX / 2)]
        ring = ring[np.isfinite(ring)]
        if ring.size >= 10:
            sigma[i] = ring.std()
    contrast = 5.0 * sigma / star_peak if star_peak > 0 else sigma * np.nan
    return seps * optics.LENSLET_SCALE, contrast


def _mask_spot_tracks(image, x, y, positions: np.ndarray, width: float = 4.0) -> np.ndarray:
    """NaN within ``width`` pixels of each spot's path from the first to the last slice."""
    out = image.copy()
    for k in range(positions.shape[1]):
        start, end = positions[0, k], positions[-1, k]
        seg = end - start
        length2 = max(float(seg @ seg), 1e-9)
        t = np.clip(((x - start[0]) * seg[0] + (y - start[1]) * seg[1]) / length2, 0, 1)
        dist = np.hypot(x - (start[0] + t * seg[0]), y - (start[1] + t * seg[1]))
        out[dist < width] = np.nan
    return out


def at_separations(seps: np.ndarray, contrast: np.ndarray, wanted) -> list[float | None]:
    """The contrast at each of ``wanted`` separations (linear interpolation; None outside)."""
    good = np.isfinite(contrast)
    out: list[float | None] = []
    for sep in wanted:
        if good.sum() < 2 or not seps[good][0] <= sep <= seps[good][-1]:
            out.append(None)
        else:
            out.append(float(np.interp(sep, seps[good], contrast[good])))
    return out
