"""Writing DRP products in the GPI data model, with provenance.

A spectral cube is a primary HDU holding only the header (the raw primary header, the DRP's
keywords, the recipe text as COMMENT cards and the primitives as HISTORY), an ``SCI`` extension
with the (37, 281, 281) cube, its celestial WCS, wavelength axis and satellite-spot keywords, and
a ``DQ`` extension. Files are written to a temporary name and renamed, so a watcher never sees
half a product.
"""
from __future__ import annotations

import platform
from pathlib import Path

import astropy
import numpy as np
from astropy.io import fits

from cruncher import __version__
from cruncher.drp.context import ReductionContext
from cruncher.instruments.gpi.optics import IFS_ROTATION, LENSLET_SCALE

SOFTWARE = (f"cruncher {__version__}; numpy {np.__version__}; astropy {astropy.__version__}; "
            f"python {platform.python_version()}")


def software_cards() -> list[tuple[str, str, str]]:
    return [("DRPVER", f"cruncher-{__version__}", "data reduction pipeline version"),
            ("DRPSOFT", SOFTWARE[:66], "")]


def celestial_cd(avparang: float, ifs_rotation: float = IFS_ROTATION) -> np.ndarray:
    """The CD matrix (deg/pixel) pyKLIP derives from AVPARANG: the same here, so both agree."""
    vert = np.radians(-(360.0 - avparang) + ifs_rotation - 90.0)
    pc = np.array([[np.cos(vert), np.sin(vert)], [-np.sin(vert), np.cos(vert)]])
    return pc * LENSLET_SCALE / 3600.0


def write_atomic(hdus: fits.HDUList, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    hdus.writeto(tmp, overwrite=True, output_verify="silentfix")
    tmp.replace(path)
    return path


def _apply(header: fits.Header, updates: dict) -> None:
    for key, (value, comment) in updates.items():
        header[key] = (value, comment)


def cube_hdus(ctx: ReductionContext) -> fits.HDUList:
    """The HDUs of the spectral cube in ``ctx``, with the recipe as provenance."""
    frame = ctx.require_frame("writing a cube")
    cube = ctx.require_cube("writing a cube")
    comments = [f"Recipe {ctx.recipe_name}:"] + [line.strip()[:72] or "."
                                                for line in ctx.recipe.to_xml().splitlines()]
    centre = ctx.spots.centre if ctx.spots is not None else None
    avparang = float(ctx.ext_updates.get("AVPARANG", (0.0, ""))[0])
    return spectral_cube_hdus(frame.primary, frame.ext, cube, ctx.cube_dq, ctx.wavelengths,
                              source=frame.path.name, centre=centre, avparang=avparang,
                              primary_updates=ctx.primary_updates, ext_updates=ctx.ext_updates,
                              comments=comments, history=ctx.history)


def spectral_cube_hdus(primary: fits.Header, ext: fits.Header, cube: np.ndarray,
                       dq: np.ndarray | None, wavelengths: np.ndarray, *, source: str,
                       centre: tuple[float, float] | None, avparang: float,
                       primary_updates: dict | None = None, ext_updates: dict | None = None,
                       comments: list[str] = (), history: list[str] = ()) -> fits.HDUList:
    """A GPI spectral cube from a raw frame's headers, the cube and what the DRP measured."""
    primary = primary.copy()
    primary["FILETYPE"] = ("Spectral Cube", "GPI file type")
    primary["IFSROTAT"] = (IFS_ROTATION, "IFS rotation from the sky frame (deg)")
    seconds = float(ext.get("ITIME", primary.get("ITIME", 0.0))) * int(ext.get("COADDS", 1))
    primary["MJD-AVG"] = (float(primary["MJD-OBS"]) + 0.5 * seconds / 86400.0, "mid-exposure MJD")
    primary["DATAFILE"] = (source, "raw frame this cube was made from")
    for key, value, comment in software_cards():
        primary[key] = (value, comment)
    _apply(primary, primary_updates or {})
    for line in comments:
        primary.add_comment(line)
    for step in history:
        primary.add_history(step)
    sci = fits.Header()
    for card in ext.cards:
        if card.keyword not in ("XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT",
                                "GCOUNT", "EXTNAME", "BZERO", "BSCALE"):
            sci.append(card)
    if centre is None:
        centre = ((cube.shape[2] - 1) / 2, (cube.shape[1] - 1) / 2)
    sci.extend(_wcs_cards(primary, wavelengths, centre, avparang), update=True)
    _apply(sci, ext_updates or {})
    dq = dq if dq is not None else np.zeros(cube.shape, np.uint8)
    return fits.HDUList([fits.PrimaryHDU(header=primary),
                         fits.ImageHDU(np.asarray(cube, np.float32), header=sci, name="SCI"),
                         fits.ImageHDU(dq.astype(np.uint8), name="DQ")])


def _wcs_cards(primary: fits.Header, wavelengths: np.ndarray, centre: tuple[float, float],
               avparang: float) -> list[tuple]:
    cd = celestial_cd(avparang)
    step = float(np.mean(np.diff(wavelengths))) if len(wavelengths) > 1 else 0.0
    return [
        ("BUNIT", "ADU per coadd", "cube units"),
        ("WCSAXES", 3, ""), ("RADESYS", "FK5", ""), ("EQUINOX", 2000.0, ""),
        ("CTYPE1", "RA---TAN", ""), ("CTYPE2", "DEC--TAN", ""), ("CUNIT1", "deg", ""),
        ("CUNIT2", "deg", ""),
        ("CRVAL1", float(primary.get("RA", 0.0)), "RA of the star (deg)"),
        ("CRVAL2", float(primary.get("DEC", 0.0)), "Dec of the star (deg)"),
        ("CRPIX1", centre[0] + 1.0, "star x (1-based)"), ("CRPIX2", centre[1] + 1.0, "star y"),
        ("CD1_1", cd[0, 0], ""), ("CD1_2", cd[0, 1], ""), ("CD2_1", cd[1, 0], ""),
        ("CD2_2", cd[1, 1], ""), ("CD1_3", 0.0, ""), ("CD2_3", 0.0, ""), ("CD3_1", 0.0, ""),
        ("CD3_2", 0.0, ""),
        ("CTYPE3", "WAVE", "wavelength axis"), ("CUNIT3", "microns", ""), ("CRPIX3", 1.0, ""),
        ("CRVAL3", float(wavelengths[0]), "first channel (um)"), ("CD3_3", step, "um/channel"),
    ]


def calibration_hdus(frame_primary: fits.Header, data: np.ndarray, filetype: str,
                     extra: dict[str, tuple] | None = None, history: list[str] | None = None
                     ) -> fits.HDUList:
    """A calibration product: the primary header marked with FILETYPE, data in SCI."""
    primary = frame_primary.copy()
    primary["FILETYPE"] = (filetype, "GPI calibration file type")
    primary["ISCALIB"] = ("YES", "a calibration file")
    for key, value, comment in software_cards():
        primary[key] = (value, comment)
    sci = fits.Header()
    _apply(sci, extra or {})
    for step in history or []:
        primary.add_history(step)
    return fits.HDUList([fits.PrimaryHDU(header=primary),
                         fits.ImageHDU(np.asarray(data, np.float32), header=sci, name="SCI")])
