"""The simulated IFS: how the lenslet grid maps onto the detector, as a master wavecal.

The lenslet grid is rotated by the IFS rotation with respect to the detector; the field stop is a
square on the detector, so in the 281 x 281 cube the field of view is a square rotated by the IFS
rotation (as in real GPI cubes). With a pitch of 10.3 pixels and 23.5 deg, neighbouring traces
sit about 4 pixels apart across the dispersion, and traces stacked along the dispersion are
23 pixels apart, more than a spectrum's length with its filter tails: no two traces overlap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cruncher.instruments.gpi.keywords import BAND_EDGES_UM
from cruncher.instruments.gpi.optics import (CUBE_SIZE, DETECTOR_SIZE, IFS_ROTATION,
                                             REFERENCE_COLS, REFERENCE_ROWS)
from cruncher.instruments.gpi.wavecal import Wavecal


@dataclass(frozen=True, kw_only=True)
class IfsModel:
    """Parameters of the simulated integral field spectrograph."""

    pitch_px: float = 10.3
    rotation_deg: float = IFS_ROTATION
    field_half_px: float = 975.0
    trace_length_px: float = 17.0
    psf_sigma_x: float = 0.5
    lsf_sigma_y: float = 0.8
    dispersion_gradient: float = 0.015
    tilt_rad: float = 0.03
    tilt_gradient: float = 0.01

    @property
    def detector_centre(self) -> float:
        return (DETECTOR_SIZE - 1) / 2.0


def master_wavecal(band: str, model: IfsModel = IfsModel(), *, mjd: float = 0.0) -> Wavecal:
    """The master wavelength solution of ``band`` for the simulated IFS (no flexure)."""
    lo, hi = BAND_EDGES_UM[band]
    centre = (CUBE_SIZE - 1) / 2.0
    iy, ix = np.mgrid[0:CUBE_SIZE, 0:CUBE_SIZE].astype(np.float64)
    u, v = ix - centre, iy - centre
    theta = np.radians(model.rotation_deg)
    c = model.detector_centre
    x0 = c + model.pitch_px * (np.cos(theta) * u - np.sin(theta) * v)
    y0 = c + model.pitch_px * (np.sin(theta) * u + np.cos(theta) * v)
    nominal = (hi - lo) / model.trace_length_px
    dispersion = nominal * (1.0 + model.dispersion_gradient * (x0 - c) / model.field_half_px)
    tilt = model.tilt_rad + model.tilt_gradient * (y0 - c) / model.field_half_px
    lambda0 = np.full_like(x0, 0.5 * (lo + hi))
    inside = (np.abs(x0 - c) <= model.field_half_px) & (np.abs(y0 - c) <= model.field_half_px)
    half = 0.5 * model.trace_length_px + 3.0
    on_detector = ((y0 - half >= REFERENCE_ROWS) & (y0 + half <= DETECTOR_SIZE - 1 - REFERENCE_ROWS)
                   & (x0 - 3 >= REFERENCE_COLS) & (x0 + 3 <= DETECTOR_SIZE - 1 - REFERENCE_COLS))
    planes = np.stack([y0, x0, lambda0, dispersion, tilt])
    planes[:, ~(inside & on_detector)] = np.nan
    return Wavecal(planes=planes, band=band, psf_sigma_x=model.psf_sigma_x, kind="master",
                   mjd=mjd, source="simulated master")
