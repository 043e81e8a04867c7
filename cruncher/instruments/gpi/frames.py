"""Writing GPI raw frames: complete headers and the file layout the instrument produces.

Used by the simulator, the tests and the demo; the values (names, keywords, units) follow the
GPI reference. What the sky and the telescope did (hour angle, parallactic angle) is computed by
the caller and passed in.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

from cruncher.instruments.gpi import keywords as kw

#: GPI exposure times are whole multiples of this (s).
ITIME_UNIT_S = 1.4548
OCCULTERS = {"Y": "FPM_Y_G6221", "J": "FPM_J_G6222", "H": "FPM_H_G6225", "K1": "FPM_K1_G6226",
             "K2": "FPM_K1_G6226"}
APODIZERS = {"Y": "APOD_Y_G6203", "J": "APOD_J_G6204", "H": "APOD_H_G6205", "K1": "APOD_K1_G6206",
             "K2": "APOD_K1_G6206"}


@dataclass(frozen=True, kw_only=True)
class FrameInfo:
    """What one raw frame records about itself."""

    object: str = "HD 95086"
    obstype: str = "OBJECT"
    obsclass: str = "science"
    band: str = "H"
    mode: str = "spec"
    start: dt.datetime = dt.datetime(2013, 11, 18, 5, 0, 0)
    itime: float = 41 * ITIME_UNIT_S
    coadds: int = 1
    number: int = 1
    program: str = "GS-2013B-Q-1"
    observation: int = 1
    ra_deg: float = 164.6119
    dec_deg: float = -68.6668
    ha_hours: float = 0.0
    par_ang: float = 0.0
    airmass: float = 1.3
    gcallamp: str | None = None
    wpangle: float | None = None
    tambient: float = 10.0
    pressur2: float = 74_300.0
    coronagraph: bool = True

    @property
    def filename(self) -> str:
        return f"S{self.start:%Y%m%d}S{self.number:04d}.fits"

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.itime * self.coadds)


def format_ha(hours: float) -> str:
    """Hour angle as GPI writes it: ``+HH:MM:SS.SS``, the sign always present."""
    sign = "-" if hours < 0 else "+"
    seconds = abs(hours) * 3600.0
    h, rest = divmod(seconds, 3600.0)
    m, s = divmod(rest, 60.0)
    return f"{sign}{int(h):02d}:{int(m):02d}:{s:05.2f}"


def raw_headers(info: FrameInfo) -> tuple[fits.Header, fits.Header]:
    """The primary and SCI-extension headers of a raw frame."""
    primary = fits.Header()
    mask = info.coronagraph and info.obstype == "OBJECT"
    datalab = f"{info.program}-{info.observation}-{info.number:03d}"
    cards = [
        ("INSTRUME", kw.INSTRUMENT, "instrument"),
        ("OBSERVAT", "Gemini-South", ""),
        ("TELESCOP", "Gemini-South", ""),
        ("OBJECT", info.object, "target"),
        ("OBSTYPE", info.obstype, "OBJECT, DARK, FLAT, ARC"),
        ("OBSCLASS", info.obsclass, ""),
        ("OBSMODE", f"{info.band}_coron" if mask else f"{info.band}_direct", ""),
        ("OBSID", f"{info.program}-{info.observation}", ""),
        ("DATALAB", datalab, "data label"),
        ("GEMPRGID", info.program, "program id"),
        ("DATE-OBS", f"{info.start:%Y-%m-%d}", "UT date of start"),
        ("UTSTART", f"{info.start:%H:%M:%S.%f}"[:12], "UT at start"),
        ("UTEND", f"{info.end:%H:%M:%S.%f}"[:12], "UT at end"),
        ("MJD-OBS", Time(info.start, scale="utc").mjd, "MJD at start"),
        ("RA", info.ra_deg, "deg"),
        ("DEC", info.dec_deg, "deg"),
        ("HA", format_ha(info.ha_hours), "hour angle at start"),
        ("PAR_ANG", info.par_ang, "parallactic angle at start (deg)"),
        ("AIRMASS", info.airmass, ""),
        ("TAMBIENT", info.tambient, "ambient temperature (C)"),
        ("PRESSUR2", info.pressur2, "pressure (Pa)"),
        ("IFSFILT", kw.FILTERS[info.band], "IFS filter"),
        ("DISPERSR", kw.DISPERSERS.get(info.mode, kw.DISPERSERS["spec"]), "disperser"),
        ("OCCULTER", OCCULTERS[info.band] if mask else "SCIENCE", "focal plane mask"),
        ("APODIZER", APODIZERS[info.band], "pupil plane apodizer"),
        ("LYOTMASK", "080m12_04" if mask else "Open", "Lyot mask"),
        ("GCALLAMP", info.gcallamp or "None", "calibration lamp"),
    ]
    if info.wpangle is not None:
        cards.append(("WPANGLE", info.wpangle, "half-wave plate angle (deg)"))
    primary.extend(cards)
    sci = fits.Header()
    sci.extend([
        ("EXTNAME", "SCI"),
        ("ITIME", info.itime, "integration time per coadd (s)"),
        ("ITIME0", int(round(info.itime * 1e6)), "requested integration time (us)"),
        ("COADDS", info.coadds, ""),
        ("COADDS0", info.coadds, ""),
        ("READS", 2, "reads (CDS)"),
        ("SYSGAIN", 2.15, "e-/DN"),
        ("BUNIT", "ADU per coadd", ""),
    ])
    return primary, sci


def write_raw_frame(directory: str | Path, info: FrameInfo, data: np.ndarray | None = None,
                    dq: np.ndarray | None = None) -> Path:
    """Write ``directory/<info.filename>`` (primary header only, SCI data, optional DQ).

    ``data`` defaults to a 2048 x 2048 frame of zeros; tests may pass something smaller.
    """
    path = Path(directory) / info.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    primary, sci = raw_headers(info)
    if data is None:
        data = np.zeros((2048, 2048), dtype=np.float32)
    hdus = [fits.PrimaryHDU(header=primary), fits.ImageHDU(data=data, header=sci, name="SCI")]
    if dq is not None:
        hdus.append(fits.ImageHDU(data=dq.astype(np.uint8), name="DQ"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
