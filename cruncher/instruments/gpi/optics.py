"""GPI optical facts used by the simulator and the DRP (reference sections 3 and 5).

Values marked approximate in the reference are realistic, not authoritative.
"""
from __future__ import annotations

import numpy as np

from cruncher.instruments.gpi.keywords import BAND_EDGES_UM, N_CHANNELS

#: Arcseconds per lenslet (cube pixel).
LENSLET_SCALE = 0.014161
#: Angle of the lenslet array with respect to the detector and the sky frame (deg).
IFS_ROTATION = 23.5
#: Cube shape (y, x) and the reference pixel (1-based, FITS convention).
CUBE_SIZE = 281
CRPIX = 141
#: Telescope pupil diameter seen by GPI (m), for lambda/D.
PUPIL_DIAMETER_M = 7.7
#: Satellite spots sit at this many lenslets per micron of wavelength from the star.
SPOT_RADIUS_PER_UM = 37.5
#: Satellite-spot to star flux ratio by apodizer band.
SPOT_RATIO = {"Y": 1.60e-4, "J": 1.84e-4, "H": 1.74e-4, "K1": 2.12e-4, "K2": 2.12e-4}
#: Focal-plane mask diameters (arcsec) by band.
FPM_DIAMETER = {"Y": 0.156, "J": 0.184, "H": 0.246, "K1": 0.306, "K2": 0.306}
#: Gemini South (Cerro Pachon).
SITE_LATITUDE_DEG = -30.24075
SITE_LONGITUDE_DEG = -70.73669
SITE_HEIGHT_M = 2722.0
#: Detector: size and reference pixels that carry no light.
DETECTOR_SIZE = 2048
REFERENCE_ROWS = 4
REFERENCE_COLS = 4
#: Fiducial separations (arcsec) of the single-frame and final contrast.
FIDUCIAL_SEPARATIONS = (0.25, 0.4, 0.8)


def lambda_over_d_lenslets(wavelength_um: float | np.ndarray) -> float | np.ndarray:
    """lambda/D in lenslets."""
    return wavelength_um * 1e-6 / PUPIL_DIAMETER_M * 206264.806 / LENSLET_SCALE


def channel_edges(band: str) -> np.ndarray:
    """The 38 edges (microns) of the 37 channels of ``band``: equal widths between band edges."""
    lo, hi = BAND_EDGES_UM[band]
    return np.linspace(lo, hi, N_CHANNELS + 1)


def channel_centres(band: str) -> np.ndarray:
    """The 37 channel centres (microns); CRVAL3 is the first, CD3_3 their spacing."""
    edges = channel_edges(band)
    return 0.5 * (edges[:-1] + edges[1:])


def spot_radius(wavelength_um: float | np.ndarray) -> float | np.ndarray:
    """Distance of the satellite spots from the star, in lenslets."""
    return SPOT_RADIUS_PER_UM * wavelength_um


def fpm_radius_lenslets(band: str) -> float:
    return FPM_DIAMETER[band] / 2.0 / LENSLET_SCALE


def sky_to_cube_offset(separation_px: float, pa_deg: float, pyklip_angle_deg: float
                       ) -> tuple[float, float]:
    """Where a source at ``separation_px`` and sky PA ``pa_deg`` (east of north) lies in a cube.

    ``pyklip_angle_deg`` is the angle pyKLIP derotates the cube by (``-AVPARANG + 90 -
    IFSROTAT``); pyKLIP rotates counter-clockwise and then flips x, so the source sits at
    ``(sep sin(pa + a), sep cos(pa + a))`` from the star before derotation.
    """
    angle = np.radians(pa_deg + pyklip_angle_deg)
    return float(separation_px * np.sin(angle)), float(separation_px * np.cos(angle))


def pyklip_angle(avparang_deg: float, ifs_rotation: float = IFS_ROTATION) -> float:
    """The angle (deg, counter-clockwise) pyKLIP derotates a GPI cube by."""
    return -avparang_deg + 90.0 - ifs_rotation
