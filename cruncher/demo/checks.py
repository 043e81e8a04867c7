"""The demo's cubes against the simulator's truth: what the DRP measured is what was put in."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

#: Largest errors accepted (pixels, pixels, degrees). The simulator's parallactic angles come from
#: astropy's full alt-az transformation, the DRP's from the standard formula on apparent sidereal
#: time; they differ by the field's rotation in about half a second to a second, 0.08 deg for the
#: demo's star near the zenith. 0.1 deg moves a planet at 0.8" by 0.1 pixel.
FLEXURE_PX, CENTRE_PX, PARANG_DEG = 0.1, 0.1, 0.1


def against_truth(cubes: list[str], truth: dict, calibrations: Path) -> tuple[list[str], bool]:
    """Lines to print and whether flexure, star centres and parallactic angles are right."""
    if not cubes:
        return ["  checks against the simulator's truth: no cubes to check"], False
    centres, angles = [], []
    for cube in cubes:
        header = fits.getheader(cube, "SCI")
        frame = truth["frames"][fits.getheader(cube)["DATAFILE"]]
        centres.append(np.hypot(header["PSFCENTX"] - frame["star_centre"][0],
                                header["PSFCENTY"] - frame["star_centre"][1]))
        angles.append(abs(header["AVPARANG"] - frame["avparang"]))
    flexure = _quick_wavecal_flexure(calibrations)
    dx, dy = truth["flexure"]
    flex_error = max(abs(flexure[0] - dx), abs(flexure[1] - dy)) if flexure else float("inf")
    lines = ["  checks against the simulator's truth (worst errors):",
             f"    flexure from the arc {flex_error:.3f} px, star centres {max(centres):.3f} px, "
             f"AVPARANG {max(angles):.3f} deg ({len(cubes)} cubes)"]
    good = flex_error < FLEXURE_PX and max(centres) < CENTRE_PX and max(angles) < PARANG_DEG
    return lines, bool(good)


def _quick_wavecal_flexure(calibrations: Path) -> tuple[float, float] | None:
    for path in sorted(calibrations.glob("*_wavecal.fits")):
        header = fits.getheader(path, "SCI")
        if header.get("WAVECALT") == "quick":
            return float(header["FLEXDX"]), float(header["FLEXDY"])
    return None
