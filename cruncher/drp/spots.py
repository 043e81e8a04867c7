"""Satellite spots: find them, measure them in every slice, and locate the star from them.

The four spots are diffraction copies of the occulted star at ``37.5 lambda`` lenslets along the
grid diagonals; their mean is the star. cruncher finds them in a middle slice (the brightest peak
in a search window about each predicted position, high-passed), predicts each slice's spots by
scaling with wavelength about the star, and refines every spot with an iterated Gaussian-weighted
centroid after removing the local background. The star's position in each slice then comes from
one least-squares model of all spots in all slices (a centre drifting linearly with wavelength
for atmospheric dispersion, plus a common scale and rotation), with outliers rejected, which is
far steadier than any single slice's four spots.

Spots are numbered as pyKLIP expects: (-x,+y), (-x,-y), (+x,+y), (+x,-y) from the star.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cruncher.instruments.gpi import optics

_log = logging.getLogger(__name__)
SIGNS = np.array([(-1, 1), (-1, -1), (1, 1), (1, -1)], dtype=np.float64) / np.sqrt(2)
STAMP = 8
FWHM_PER_LAMBDA_D = 1.03


class SpotsNotFound(Exception):
    """Fewer than three satellite spots could be found."""


@dataclass(frozen=True)
class Spots:
    positions: np.ndarray   # (C, 4, 2) measured x, y
    found: np.ndarray       # (C, 4) measurement usable
    centres: np.ndarray     # (C, 2) star per slice from the global model
    residual_rms: float     # of the measured positions about the model (px)

    @property
    def centre(self) -> tuple[float, float]:
        mean = self.centres.mean(axis=0)
        return float(mean[0]), float(mean[1])

    @property
    def mask(self) -> int:
        """SATSMASK: bit per slice (slice 0 most significant), set when all four spots were found."""
        value = 0
        for ok in self.found.all(axis=1):
            value = (value << 1) | int(ok)
        return value


def psf_sigma(wavelength: np.ndarray | float) -> np.ndarray | float:
    return FWHM_PER_LAMBDA_D * optics.lambda_over_d_lenslets(wavelength) / 2.3548


def highpass(image: np.ndarray, box: int = 15) -> np.ndarray:
    """``image`` (2-D, or a cube of slices) minus a median filter of about ``box`` pixels.

    The median is computed on 3 x 3 binned data and interpolated back: a full-resolution median
    over a cube costs seconds, this costs milliseconds and keeps the filter's scale. NaNs stay NaN.
    """
    cube = image[None] if image.ndim == 2 else image
    nan = ~np.isfinite(cube)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fill = np.nanmedian(cube.reshape(len(cube), -1), axis=1)
    filled = np.where(nan, np.nan_to_num(fill)[:, None, None], cube)
    n, ny, nx = filled.shape
    by, bx = ny // 3 * 3, nx // 3 * 3
    binned = np.median(filled[:, :by, :bx].reshape(n, by // 3, 3, bx // 3, 3), axis=(2, 4))
    smooth = ndimage.median_filter(binned, size=(1, max(3, box // 3), max(3, box // 3)),
                                   mode="nearest")
    zoom = ndimage.zoom(smooth, (1, ny / smooth.shape[1], nx / smooth.shape[2]), order=1,
                        mode="nearest", grid_mode=True)
    out = np.where(nan, np.nan, filled - zoom[:, :ny, :nx])
    return out[0] if image.ndim == 2 else out


def find_spots(cube: np.ndarray, wavelengths: np.ndarray, *,
               guess: tuple[float, float] | None = None, search_window: int = 20) -> Spots:
    """Measure the four satellite spots in every slice of ``cube`` (C, y, x)."""
    n = cube.shape[0]
    ref = n // 2
    lam_ref = wavelengths[ref]
    if guess is None:
        guess = ((cube.shape[2] - 1) / 2.0, (cube.shape[1] - 1) / 2.0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        image = highpass(np.nanmean(cube[max(ref - 1, 0):ref + 2], axis=0))
    first = _search(image, np.asarray(guess), optics.spot_radius(lam_ref), search_window)
    first = _refine(image[None], first[None], np.array([psf_sigma(lam_ref)]))[0]
    centre = first.mean(axis=0)
    predicted = centre + (first - centre)[None, :, :] * (wavelengths / lam_ref)[:, None, None]
    positions = _refine(cube, predicted, psf_sigma(wavelengths))
    found = _usable(cube, positions, predicted, psf_sigma(wavelengths))
    if found.any(axis=0).sum() < 3:
        raise SpotsNotFound(f"only {int(found.any(axis=0).sum())} of 4 satellite spots found")
    centres, rms, found = _fit_centres(positions, found, wavelengths)
    return Spots(positions=positions, found=found, centres=centres, residual_rms=rms)


def _search(image: np.ndarray, guess: np.ndarray, radius: float, window: int) -> np.ndarray:
    """(4, 2) brightest smoothed peak in a ``window``-pixel box about each predicted spot."""
    smooth = ndimage.gaussian_filter(np.nan_to_num(image), 1.0)
    out = np.zeros((4, 2))
    half = window // 2
    for k, unit in enumerate(SIGNS):
        px, py = guess + unit * radius
        x0, y0 = int(round(px)) - half, int(round(py)) - half
        box = smooth[max(y0, 0):y0 + window + 1, max(x0, 0):x0 + window + 1]
        if box.size == 0:
            raise SpotsNotFound("a predicted spot position lies off the cube")
        iy, ix = np.unravel_index(np.argmax(box), box.shape)
        out[k] = (max(x0, 0) + ix, max(y0, 0) + iy)
    return out


def _stamps(cube: np.ndarray, positions: np.ndarray):
    """Pixel stamps (C, 4, S, S) about rounded positions, and their coordinates."""
    offsets = np.arange(-STAMP, STAMP + 1)
    cx = np.rint(positions[..., 0]).astype(int)
    cy = np.rint(positions[..., 1]).astype(int)
    xs = cx[..., None, None] + offsets[None, None, None, :]
    ys = cy[..., None, None] + offsets[None, None, :, None]
    xs_b, ys_b = np.broadcast_arrays(xs, ys)
    inside = (xs_b >= 0) & (xs_b < cube.shape[2]) & (ys_b >= 0) & (ys_b < cube.shape[1])
    slices = np.arange(cube.shape[0])[:, None, None, None]
    values = cube[slices, np.clip(ys_b, 0, cube.shape[1] - 1), np.clip(xs_b, 0, cube.shape[2] - 1)]
    values = np.where(inside & np.isfinite(values), values, np.nan)
    return values, xs_b, ys_b


def _refine(cube: np.ndarray, positions: np.ndarray, sigma: np.ndarray, iterations: int = 12
            ) -> np.ndarray:
    """Iterated Gaussian-weighted centroids, background (stamp border median) removed."""
    pos = positions.astype(np.float64).copy()
    sig = np.asarray(sigma, dtype=np.float64)[:, None, None, None]
    for _ in range(iterations):
        values, xs, ys = _stamps(cube, pos)
        dx = xs - pos[..., 0][..., None, None]
        dy = ys - pos[..., 1][..., None, None]
        r2 = dx ** 2 + dy ** 2
        border = np.where(r2 > (3.5 * sig) ** 2, values, np.nan)
        background = np.nanmedian(border.reshape(*border.shape[:2], -1), axis=2)
        signal = np.nan_to_num(values - background[..., None, None])
        weight = np.exp(-r2 / (2 * sig ** 2)) * signal
        total = weight.sum(axis=(2, 3))
        safe = np.where(total > 0, total, np.nan)
        # With weight and spot of equal width the weighted centroid moves half-way: step twice.
        pos[..., 0] += np.nan_to_num(2.0 * (weight * dx).sum(axis=(2, 3)) / safe)
        pos[..., 1] += np.nan_to_num(2.0 * (weight * dy).sum(axis=(2, 3)) / safe)
    return pos


def _usable(cube, positions, predicted, sigma) -> np.ndarray:
    """Spots that stayed near their prediction and stand above the local noise."""
    values, xs, ys = _stamps(cube, positions)
    r2 = (xs - positions[..., 0][..., None, None]) ** 2 + (ys - positions[..., 1][..., None, None]) ** 2
    sig = np.asarray(sigma)[:, None, None, None]
    core = np.where(r2 <= (1.5 * sig) ** 2, values, np.nan)
    ring = np.where(r2 > (3.5 * sig) ** 2, values, np.nan)
    flat_ring = ring.reshape(*ring.shape[:2], -1)
    background = np.nanmedian(flat_ring, axis=2)
    noise = 1.4826 * np.nanmedian(np.abs(flat_ring - background[..., None]), axis=2)
    peak = np.nanmean(core.reshape(*core.shape[:2], -1), axis=2) - background
    moved = np.hypot(*(positions - predicted).transpose(2, 0, 1))
    return (peak > 5 * noise) & (moved < 3.0) & np.isfinite(positions).all(axis=2)


def _fit_centres(positions: np.ndarray, found: np.ndarray, wavelengths: np.ndarray,
                 clip: float = 4.0) -> tuple[np.ndarray, float, np.ndarray]:
    """Least-squares star centre per slice from all spots: c0 + a (lam - mean) + lam M u_k."""
    lam_mean = wavelengths.mean()
    c, k = np.nonzero(np.ones(found.shape, bool))
    lam = wavelengths[c] - 0.0
    ux, uy = SIGNS[k, 0], SIGNS[k, 1]
    one, zero = np.ones_like(lam), np.zeros_like(lam)
    # parameters: c0x, c0y, ax, ay, s, t ; x = c0x + ax dl + lam (s ux - t uy); y likewise
    dl = lam - lam_mean
    ax_rows = np.stack([one, zero, dl, zero, lam * ux, -lam * uy], axis=1)
    ay_rows = np.stack([zero, one, zero, dl, lam * uy, lam * ux], axis=1)
    design = np.concatenate([ax_rows, ay_rows])
    target = np.concatenate([positions[c, k, 0], positions[c, k, 1]])
    use = np.concatenate([found[c, k], found[c, k]])
    for _ in range(5):
        params, *_ = np.linalg.lstsq(design[use], target[use], rcond=None)
        resid = target - design @ params
        rms = float(np.sqrt(np.mean(resid[use] ** 2)))
        bad = np.abs(resid) > max(clip * rms, 0.05)
        per_spot = bad[: len(lam)] | bad[len(lam):]
        new_use = np.concatenate([found[c, k] & ~per_spot] * 2)
        if np.array_equal(new_use, use):
            break
        use = new_use
    found = use[: len(lam)].reshape(found.shape)
    centres = np.stack([params[0] + params[2] * (wavelengths - lam_mean),
                        params[1] + params[3] * (wavelengths - lam_mean)], axis=1)
    return centres, rms, found


def peak_fluxes(cube: np.ndarray, positions: np.ndarray, wavelengths: np.ndarray,
                radius: float = 7.0) -> np.ndarray:
    """(C, 4) Gaussian matched-filter peak amplitude of each spot on a high-passed ``cube``."""
    values, xs, ys = _stamps(cube, positions)
    r2 = (xs - positions[..., 0][..., None, None]) ** 2 + (ys - positions[..., 1][..., None, None]) ** 2
    sig = psf_sigma(wavelengths)[:, None, None, None]
    model = np.exp(-r2 / (2 * sig ** 2)) * (r2 <= radius ** 2)
    good = np.isfinite(values)
    values = np.where(good, values, 0.0)
    model = np.where(good, model, 0.0)
    return (values * model).sum(axis=(2, 3)) / np.maximum((model ** 2).sum(axis=(2, 3)), 1e-12)


def header_updates(found: Spots, fluxes: np.ndarray | None = None) -> dict[str, tuple]:
    """The SCI-header keywords of the spot measurements (SATS*, PSFC_*, PSFCENT*, SATSMASK, SATF*)."""
    out: dict[str, tuple] = {}
    for c, slice_positions in enumerate(found.positions):
        for k, (x, y) in enumerate(slice_positions):
            out[f"SATS{c}_{k}"] = (f"{x:7.3f} {y:7.3f}", f"spot {k} slice {c} (x y)")
        cx, cy = found.centres[c]
        out[f"PSFC_{c}"] = (f"{cx:7.3f} {cy:7.3f}", f"star in slice {c} (x y)")
    cx, cy = found.centre
    out["PSFCENTX"] = (round(cx, 4), "star x, mean of the slices (0-based)")
    out["PSFCENTY"] = (round(cy, 4), "star y, mean of the slices (0-based)")
    out["SATSMASK"] = (format(found.mask, "X"), "slices whose four spots were found")
    out["SATSORDR"] = (1, "satellite spot order")
    out["SATSRMS"] = (round(found.residual_rms, 4), "spot scatter about the model (px)")
    if fluxes is not None:
        for c, row in enumerate(fluxes):
            for k, value in enumerate(row):
                out[f"SATF{c}_{k}"] = (float(np.round(value, 4)) if np.isfinite(value) else 0.0,
                                       f"spot {k} slice {c} peak flux")
    return out
