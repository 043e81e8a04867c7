"""The demo's cubes against the simulator's truth: what the DRP measured is what was put in."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

#: Largest errors accepted (pixels, pixels, degrees). 0.1 deg moves a planet at 0.8" by 0.1 px.
FLEXURE_PX, CENTRE_PX, PARANG_DEG = 0.1, 0.1, 0.1
#: The DRP computes AVPARANG as GPI's pipeline does, with the standard formula on the target's
#: mean place of date; the simulator's truth is the zenith's direction seen from the target with
#: astropy's full transformation, which includes aberration (up to 20.5" a year, plus nutation).
#: The two differ by that displacement seen from the zenith: about 20" / sin(zenith distance),
#: 0.09 deg for the demo's star 3.5 deg from the zenith. That much is allowed on top.
APPARENT_PLACE_ARCSEC = 25.0


def parang_tolerance(airmass: float | None) -> float:
    """Degrees of AVPARANG error accepted for a frame at ``airmass``."""
    if not airmass or airmass <= 1.0:
        return PARANG_DEG if not airmass else 180.0     # at the zenith the angle is undefined
    zenith_distance = np.arccos(1.0 / airmass)
    return PARANG_DEG + float(np.degrees(np.radians(APPARENT_PLACE_ARCSEC / 3600.0)
                                         / np.sin(zenith_distance)))


def against_truth(cubes: list[str], truth: dict, calibrations: Path) -> tuple[list[str], bool]:
    """Lines to print and whether flexure, star centres and parallactic angles are right."""
    if not cubes:
        return ["  checks against the simulator's truth: no cubes to check"], False
    centres, angles, allowed = [], [], []
    for cube in cubes:
        header, primary = fits.getheader(cube, "SCI"), fits.getheader(cube)
        frame = truth["frames"][primary["DATAFILE"]]
        centres.append(np.hypot(header["PSFCENTX"] - frame["star_centre"][0],
                                header["PSFCENTY"] - frame["star_centre"][1]))
        angles.append(abs(header["AVPARANG"] - frame["avparang"]))
        allowed.append(parang_tolerance(primary.get("AIRMASS")))
    worst = int(np.argmax(np.array(angles) / np.array(allowed)))
    flexure = _quick_wavecal_flexure(calibrations)
    dx, dy = truth["flexure"]
    flex_error = max(abs(flexure[0] - dx), abs(flexure[1] - dy)) if flexure else float("inf")
    lines = ["  checks against the simulator's truth (worst errors):",
             f"    flexure from the arc {flex_error:.3f} px, star centres {max(centres):.3f} px, "
             f"AVPARANG {angles[worst]:.3f} deg (allowed {allowed[worst]:.3f} there) "
             f"({len(cubes)} cubes)"]
    good = flex_error < FLEXURE_PX and max(centres) < CENTRE_PX and \
        all(a < limit for a, limit in zip(angles, allowed))
    return lines, bool(good)


def _quick_wavecal_flexure(calibrations: Path) -> tuple[float, float] | None:
    for path in sorted(calibrations.glob("*_wavecal.fits")):
        header = fits.getheader(path, "SCI")
        if header.get("WAVECALT") == "quick":
            return float(header["FLEXDX"]), float(header["FLEXDY"])
    return None
