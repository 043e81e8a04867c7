"""Calibration lamp lines (vacuum wavelengths, microns) used for wavelength solutions.

Argon I lines in the GPI bands with approximate relative strengths; what a quick wavelength
solution needs is where lines are, not their exact intensities.
"""
from __future__ import annotations

from cruncher.instruments.gpi.keywords import BAND_EDGES_UM

ARGON_LINES_UM: dict[str, tuple[tuple[float, float], ...]] = {
    "Y": ((0.96599, 1.0), (1.04730, 0.6), (1.06760, 0.8), (1.11048, 0.3)),
    "J": ((1.14915, 0.4), (1.21142, 0.7), (1.24432, 0.5), (1.27057, 1.0), (1.29605, 0.6),
          (1.32763, 0.8)),
    "H": ((1.50496, 0.9), (1.51772, 0.4), (1.59899, 0.3), (1.61800, 0.6), (1.69406, 1.0),
          (1.74492, 0.5), (1.79196, 0.4)),
    "K1": ((1.98222, 0.5), (2.06220, 1.0), (2.09920, 0.6), (2.15402, 0.8)),
    "K2": ((2.15402, 0.8), (2.20834, 0.7), (2.31391, 1.0), (2.38523, 0.6)),
}


def lines_in_band(band: str, margin_um: float = 0.0) -> tuple[tuple[float, float], ...]:
    """(wavelength, relative strength) of the argon lines inside ``band``."""
    lo, hi = BAND_EDGES_UM[band]
    return tuple((w, s) for w, s in ARGON_LINES_UM[band] if lo + margin_um <= w <= hi - margin_um)
