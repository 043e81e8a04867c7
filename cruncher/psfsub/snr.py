"""Matched filtering, noise by separation, SNR maps and point-source detection.

A planet is (near enough) a 2-D Gaussian. Cross-correlating an image with a unit-peak Gaussian of
the same width and dividing by the template's energy measures a point source's *peak* at every
pixel: on an image in contrast units, a planet of contrast ``c`` reads ``c``. The noise at a
separation is the standard deviation of the filtered image in the annulus at that separation;
the SNR map is their ratio. Images here are north-up, east-left, so a source at ``(dx, dy)`` from
the star has position angle ``atan2(-dx, dy)``.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from cruncher.instruments.gpi.optics import LENSLET_SCALE

DEFAULT_FWHM = 3.5


def gaussian(fwhm: float, half: int | None = None) -> np.ndarray:
    """A unit-peak Gaussian stamp."""
    sigma = fwhm / 2.3548
    half = half if half is not None else int(np.ceil(3 * sigma))
    y, x = np.mgrid[-half:half + 1, -half:half + 1]
    return np.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))


def matched_filter(image: np.ndarray, fwhm: float = DEFAULT_FWHM) -> np.ndarray:
    """Peak amplitude of a best-fitting Gaussian at every pixel (NaN-aware; NaN stays NaN)."""
    template = gaussian(fwhm)
    valid = np.isfinite(image)
    filled = np.where(valid, image, 0.0)
    num = ndimage.correlate(filled, template, mode="constant")
    energy = ndimage.correlate(valid.astype(np.float64), template ** 2, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / energy
    out[~valid | (energy < 0.5 * np.sum(template ** 2))] = np.nan
    return out


def radius_map(shape: tuple[int, int], centre: tuple[float, float]) -> np.ndarray:
    y, x = np.indices(shape)
    return np.hypot(x - centre[0], y - centre[1])


def noise_by_separation(image: np.ndarray, centre: tuple[float, float], width: float = 2.0,
                        exclude: np.ndarray | None = None) -> np.ndarray:
    """Per pixel, the standard deviation of finite pixels in its annulus of ``width`` pixels."""
    radius = radius_map(image.shape, centre)
    rings = np.floor(radius / width).astype(int)
    usable = np.isfinite(image)
    if exclude is not None:
        usable &= ~exclude
    counts = np.bincount(rings[usable], minlength=rings.max() + 1)
    sums = np.bincount(rings[usable], image[usable], minlength=rings.max() + 1)
    squares = np.bincount(rings[usable], image[usable] ** 2, minlength=rings.max() + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
        std = np.sqrt(np.maximum(squares / counts - mean ** 2, 0) * counts / np.maximum(counts - 1, 1))
    std[counts < 5] = np.nan
    return std[rings]


def snr_map(image: np.ndarray, centre: tuple[float, float], fwhm: float = DEFAULT_FWHM,
            width: float = 2.0) -> np.ndarray:
    """Matched-filtered image divided by the noise at each pixel's separation."""
    filtered = matched_filter(image, fwhm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return filtered / noise_by_separation(filtered, centre, width)


def detect(image: np.ndarray, centre: tuple[float, float], *, fwhm: float = DEFAULT_FWHM,
           **kwargs) -> list[dict]:
    """Point sources in an image: significance from the SNR map, positions from the flux map.

    Two passes: a bright source inflates the noise of its own annulus, so the noise is measured
    again with the first pass's sources masked.
    """
    filtered = matched_filter(image, fwhm)
    # the filter smears the field's outer NaN edge into spurious "sources": not searched there
    filtered[near_outer_edge(image, 2 * fwhm)] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        significance = filtered / noise_by_separation(filtered, centre)
        first = find_sources(significance, centre, flux=filtered, **kwargs)
        if not first:
            return first
        y, x = np.indices(image.shape)
        masked = np.zeros(image.shape, bool)
        for source in first:
            masked |= np.hypot(x - source["x"], y - source["y"]) < 2 * fwhm
        significance = filtered / noise_by_separation(filtered, centre, exclude=masked)
    return find_sources(significance, centre, flux=filtered, **kwargs)


def near_outer_edge(image: np.ndarray, distance: float) -> np.ndarray:
    """Pixels within ``distance`` of the NaN region around the field (the NaNs that touch the
    image border; the coronagraph's NaN centre is not an edge)."""
    nan = ~np.isfinite(image)
    labels, _ = ndimage.label(nan)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.isin(labels, border[border > 0])
    if not outside.any():
        return np.zeros(image.shape, bool)
    return ndimage.distance_transform_edt(~outside) <= distance


def position_angle(dx: float, dy: float) -> float:
    """PA (deg, east of north) of an offset in a north-up, east-left image."""
    return float(np.degrees(np.arctan2(-dx, dy)) % 360.0)


def find_sources(snr: np.ndarray, centre: tuple[float, float], *, threshold: float = 5.0,
                 limit: int = 5, inner_px: float = 0.0, min_distance: int = 4,
                 flux: np.ndarray | None = None) -> list[dict]:
    """The brightest local SNR maxima above ``threshold`` (outside ``inner_px``), best first.

    Positions are refined on ``flux`` (the matched-filtered image) when given: the SNR map's
    peak is pulled outward, because the noise falls with separation.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        filled = np.where(np.isfinite(snr), snr, -np.inf)
        peaks = (filled == ndimage.maximum_filter(filled, size=2 * min_distance + 1)) \
            & (filled >= threshold)
    radius = radius_map(snr.shape, centre)
    peaks &= radius > inner_px
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-filled[ys, xs])[:limit]
    found = []
    for y, x in zip(ys[order], xs[order]):
        if flux is None:
            yy, xx = _refine(snr, int(x), int(y))
        else:
            fx, fy = _local_peak(flux, int(x), int(y), reach=2)
            yy, xx = _refine(flux, fx, fy)
        dx, dy = xx - centre[0], yy - centre[1]
        sep = float(np.hypot(dx, dy))
        found.append({"x": round(xx, 2), "y": round(yy, 2), "sep_px": round(sep, 2),
                      "sep_arcsec": round(sep * LENSLET_SCALE, 4),
                      "pa_deg": round(position_angle(dx, dy), 2),
                      "snr": round(float(snr[y, x]), 2)})
    return found


def _local_peak(image: np.ndarray, x: int, y: int, reach: int) -> tuple[int, int]:
    """The brightest finite pixel within ``reach`` of (x, y)."""
    y0, x0 = max(y - reach, 0), max(x - reach, 0)
    stamp = image[y0:y + reach + 1, x0:x + reach + 1]
    if not np.isfinite(stamp).any():
        return x, y
    iy, ix = np.unravel_index(np.nanargmax(stamp), stamp.shape)
    return x0 + int(ix), y0 + int(iy)


def _refine(image: np.ndarray, x: int, y: int) -> tuple[float, float]:
    """Sub-pixel peak from a 3 x 3 centroid of positive values."""
    stamp = image[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
    weights = np.where(np.isfinite(stamp), np.clip(stamp, 0, None), 0.0)
    if weights.sum() <= 0:
        return float(y), float(x)
    yy, xx = np.indices(stamp.shape)
    return (float(max(y - 1, 0) + (yy * weights).sum() / weights.sum()),
            float(max(x - 1, 0) + (xx * weights).sum() / weights.sum()))
