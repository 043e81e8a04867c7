"""Writing PSF-subtraction products: names, layout and provenance.

Products of a dataset live in its output directory (``<reduced>/<Object>/autoreduced/
<YYYYMMDD>_<band>_Spec/``) and are named as the Data Cruncher named them, e.g.
``pyklip-S20160315-H-k300a9s4m1-KLmodes-all.fits``. Every FITS product carries its provenance in
the primary header: the input cubes (``FILE_<i>``), the job and algorithm, the parameters as
JSON, and the software versions.
"""
from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import astropy
import numpy as np
from astropy.io import fits

from cruncher import __version__


def software() -> dict[str, str]:
    versions = {"cruncher": __version__, "numpy": np.__version__, "astropy": astropy.__version__,
                "python": platform.python_version()}
    try:
        import pyklip

        versions["pyklip"] = getattr(pyklip, "__version__", "unknown")
    except ImportError:
        pass
    return versions


def provenance(header: fits.Header, *, job_id: str, algorithm: str, inputs: Sequence[str],
               params: Mapping[str, Any], raw_names: Sequence[str] = ()) -> fits.Header:
    """Add what a product was made from and how to ``header`` (returned)."""
    header["CRUNCHJB"] = job_id[:68]      # no comment: a long id fills the card
    header["PSFALGO"] = (algorithm, "PSF subtraction / product algorithm")
    header["DRPNFILE"] = (len(inputs), "number of input cubes")
    for i, path in enumerate(inputs):
        header[f"FILE_{i}"] = (Path(path).name, "input cube")
    for i, name in enumerate(raw_names):
        header[f"RAW_{i}"] = (str(name), "raw frame behind input cube")
    if "PSFPARAM" not in header:     # pyKLIP writes its own; the full set is in HISTORY
        header["PSFPARAM"] = (json.dumps(dict(params), sort_keys=True, default=str)[:68], "")
    header.add_history("parameters: " + json.dumps(dict(params), sort_keys=True, default=str))
    for name, version in software().items():
        header.add_history(f"software: {name} {version}")
    header["CRUNCHV"] = (__version__, "cruncher version")
    return header


def write_image(path: str | Path, data: np.ndarray, *, primary: fits.Header,
                extension: fits.Header | None = None) -> Path:
    """Write a primary-header-only FITS file with the data in a SCI extension, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hdus = fits.HDUList([fits.PrimaryHDU(header=primary),
                         fits.ImageHDU(np.asarray(data, np.float32), header=extension, name="SCI")])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    hdus.writeto(tmp, overwrite=True, output_verify="silentfix")
    tmp.replace(path)
    return path


def base_header(target: str, band: str, date: str, filetype: str) -> fits.Header:
    header = fits.Header()
    header["OBJECT"] = target
    header["IFSFILT"] = f"IFSFILT_{band}"
    header["DATE-OBS"] = f"{date[:4]}-{date[4:6]}-{date[6:]}" if len(date) == 8 else date
    header["FILETYPE"] = (filetype, "product type")
    return header


def north_up_wcs(header: fits.Header, centre: tuple[float, float], ra: float | None,
                 dec: float | None, scale_arcsec: float) -> fits.Header:
    """A north-up, east-left celestial WCS centred on the star."""
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRPIX1"], header["CRPIX2"] = centre[0] + 1.0, centre[1] + 1.0
    header["CRVAL1"], header["CRVAL2"] = float(ra or 0.0), float(dec or 0.0)
    header["CD1_1"], header["CD1_2"] = -scale_arcsec / 3600.0, 0.0
    header["CD2_1"], header["CD2_2"] = 0.0, scale_arcsec / 3600.0
    header["PSFCENTX"], header["PSFCENTY"] = centre
    return header
