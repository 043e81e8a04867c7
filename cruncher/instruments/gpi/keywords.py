"""GPI header vocabulary: filters, dispersers, file names and how to read them.

Facts from the GPI DRP and pyKLIP's GPI reader (see the project's GPI reference, section 3).
"""
from __future__ import annotations

import re
from pathlib import Path

INSTRUMENT = "GPI"
#: IFS filter wheel names by band.
FILTERS = {
    "Y": "IFSFILT_Y_G1211",
    "J": "IFSFILT_J_G1212",
    "H": "IFSFILT_H_G1213",
    "K1": "IFSFILT_K1_G1214",
    "K2": "IFSFILT_K2_G1215",
}
#: Disperser names by observing mode.
DISPERSERS = {"spec": "DISP_PRISM_G6262", "pol": "DISP_WOLLASTON_G6261"}
#: Band edges in microns; the 37 spectral channels span them.
BAND_EDGES_UM = {
    "Y": (0.9444, 1.1448),
    "J": (1.1108, 1.353),
    "H": (1.4904, 1.8016),
    "K1": (1.8818, 2.1994),
    "K2": (2.1034, 2.4004),
}
N_CHANNELS = 37
OBSTYPES = ("OBJECT", "DARK", "FLAT", "ARC")

#: Raw frame names: site S + UT date + S (science) / E (engineering) + running number.
RAW_NAME = re.compile(r"^(?P<site>[SN])(?P<date>\d{8})(?P<kind>[SE])(?P<number>\d{4})$")
_PROGRAM = re.compile(r"^(G[SN]-\d{4}[AB]-[A-Z]+-\d+)")
_FITS_SUFFIXES = (".fits.gz", ".fits", ".fit.gz", ".fit")


def band_from_filter(ifsfilt: str | None) -> str | None:
    """``IFSFILT_H_G1213`` -> ``H``; ``None`` for anything else."""
    if not ifsfilt:
        return None
    for band, name in FILTERS.items():
        if ifsfilt.strip().upper() == name or ifsfilt.strip().upper() == f"IFSFILT_{band}":
            return band
    return None


def mode_from_disperser(dispersr: str | None) -> str | None:
    """``DISP_PRISM_*`` -> ``spec``, ``DISP_WOLLASTON_*`` -> ``pol``; ``None`` otherwise."""
    text = (dispersr or "").upper()
    if "PRISM" in text:
        return "spec"
    if "WOLLASTON" in text:
        return "pol"
    return None


def program_from_datalab(datalab: str | None) -> str | None:
    """``GS-2015B-LP-6-12-001`` -> ``GS-2015B-LP-6``."""
    match = _PROGRAM.match((datalab or "").strip())
    return match.group(1) if match else None


def stem(path: str | Path) -> str:
    """The frame's name without directory and FITS suffix: ``S20131118S0064``."""
    name = Path(path).name
    for suffix in _FITS_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def canonical_name(path: str | Path) -> str:
    """The name a raw frame is known by in the database and in notes: ``S20131118S0064.fits``.

    Compression is not part of a frame's identity.
    """
    return stem(path) + ".fits"


def is_fits_name(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(_FITS_SUFFIXES)


def normalise_object(name: str | None) -> str:
    """A key that matches ``HD 95086``, ``HD95086`` and ``hd_95086`` to each other."""
    return re.sub(r"[\s_\-]+", "", (name or "")).lower()


def dataset_dir(object_name: str, date: str, band: str, mode: str) -> str:
    """Where a sequence's products go, relative to the reduced-data root, as the Data Cruncher
    laid them out: ``HD_95086/autoreduced/20160315_H_Spec``. ``date`` is ``YYYYMMDD``."""
    folder = re.sub(r"[^A-Za-z0-9+.-]+", "_", object_name.strip()) or "unknown"
    return f"{folder}/autoreduced/{date}_{band}_{mode.capitalize()}"
