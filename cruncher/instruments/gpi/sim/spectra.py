"""Spectral shapes for simulated scenes: the star, L- and T-type planets, the filter.

Planet spectra are the Marley et al. model atmospheres that pyKLIP ships (its 'methane' template
is the T-type one used here), converted from F_nu to photons per micron.
"""
from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from cruncher.instruments.gpi.keywords import BAND_EDGES_UM

#: pyKLIP model files for each planet type.
PLANET_MODELS = {"L": "cloudy/t1600g100f2.flx", "T": "t800g100nc.flx"}
STAR_TEMPERATURE_K = 7500.0
FILTER_EDGE_UM = 0.02
FILTER_SOFTNESS_UM = 0.002


def filter_transmission(band: str, wavelength: np.ndarray) -> np.ndarray:
    """A flat-topped filter whose soft edges lie outside the band's 37 channels.

    The DRP's 37 channels span the flat part of the filter; the edges, blurred by the line
    spread function, fall beyond them.
    """
    lo, hi = BAND_EDGES_UM[band]
    rise = 1.0 / (1.0 + np.exp(-(wavelength - (lo - FILTER_EDGE_UM)) / FILTER_SOFTNESS_UM))
    fall = 1.0 / (1.0 + np.exp((wavelength - (hi + FILTER_EDGE_UM)) / FILTER_SOFTNESS_UM))
    return rise * fall


def star_photons(wavelength: np.ndarray) -> np.ndarray:
    """Photon spectral density of an A-type star (black body), arbitrary scale."""
    h_c_over_k = 14387.77  # um K
    lam = np.asarray(wavelength, dtype=np.float64)
    return lam ** -4 / np.expm1(h_c_over_k / (lam * STAR_TEMPERATURE_K))


@functools.lru_cache(maxsize=4)
def _model(planet_type: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        name = PLANET_MODELS[planet_type.upper()]
    except KeyError:
        raise ValueError(f"unknown planet type {planet_type!r} (known: L, T)") from None
    text = resources.files("pyklip").joinpath("spectra", name).read_text()
    rows = []
    for line in text.splitlines():
        parts = line.split()
        try:
            rows.append((float(parts[1]), float(parts[3])))
        except (IndexError, ValueError):
            break
    wl, f_nu = np.array(sorted(rows)).T
    return wl, f_nu / wl  # photons per unit wavelength ~ F_nu / lambda


def planet_photons(planet_type: str, wavelength: np.ndarray) -> np.ndarray:
    """Photon spectral density of an L- or T-type planet model, arbitrary scale."""
    from scipy.interpolate import interp1d

    wl, photons = _model(planet_type)
    return interp1d(wl, photons, kind="cubic")(wavelength)


def planet_to_star_ratio(planet_type: str, band: str, wavelength: np.ndarray,
                         contrast: float) -> np.ndarray:
    """Planet/star photon ratio at ``wavelength``, scaled so that over ``band`` (through the
    filter) the planet has ``contrast`` times the star's photons."""
    lam = np.linspace(*BAND_EDGES_UM[band], 400)
    weight = filter_transmission(band, lam)
    scale = contrast * np.trapezoid(star_photons(lam) * weight, lam) / np.trapezoid(
        planet_photons(planet_type, lam) * weight, lam)
    return scale * planet_photons(planet_type, wavelength) / star_photons(wavelength)
