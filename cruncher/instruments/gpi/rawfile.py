"""Read what the database keeps of a raw GPI frame from its headers (no pixel data)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cruncher.errors import BadInputError
from cruncher.instruments.fitsio import header_value, read_headers
from cruncher.instruments.gpi import keywords as kw

#: Keywords without which a raw frame cannot be indexed or reduced.
REQUIRED = ("OBJECT", "OBSTYPE", "IFSFILT", "DISPERSR", "DATE-OBS", "UTSTART", "MJD-OBS", "ITIME")
#: Keywords GPI writes in the SCI extension header; all others are looked up in the primary first.
EXTENSION_KEYS = frozenset({"ITIME", "ITIME0", "COADDS", "COADDS0", "READS", "SYSGAIN", "BUNIT"})


def raw_record(path: str | Path) -> dict[str, Any]:
    """The ``raw`` table row of one file, from its headers.

    Raises
    ------
    BadInputError
        Not FITS, truncated, missing a required keyword, or a value that cannot be read.
    FileNotReadyError
        The file looks like it is still being written.
    """
    path = Path(path)
    headers = read_headers(path)

    def get(key: str) -> Any:
        return header_value(headers, key, prefer=1 if key in EXTENSION_KEYS else 0)

    missing = [key for key in REQUIRED if get(key) is None]
    if missing:
        raise BadInputError(str(path), f"missing keyword{'s' if len(missing) > 1 else ''} "
                                       f"{', '.join(missing)}")
    band = kw.band_from_filter(get("IFSFILT"))
    if band is None:
        raise BadInputError(str(path), f"unknown IFSFILT {get('IFSFILT')!r}")
    try:
        date_obs = dt.date.fromisoformat(str(get("DATE-OBS")).strip()[:10])
        itime = float(get("ITIME"))
        mjd = float(get("MJD-OBS"))
        coadds = int(get("COADDS") or 1)
    except (TypeError, ValueError) as exc:
        raise BadInputError(str(path), f"unreadable keyword value: {exc}") from None
    datalab = _text(get("DATALAB"))
    return {
        "filename": kw.canonical_name(path),
        "object": _text(get("OBJECT")) or "",
        "object_key": kw.normalise_object(_text(get("OBJECT"))),
        "obstype": (_text(get("OBSTYPE")) or "").upper(),
        "obsclass": _text(get("OBSCLASS")),
        "obsmode": _text(get("OBSMODE")),
        "ifsfilt": _text(get("IFSFILT")),
        "band": band,
        "dispersr": _text(get("DISPERSR")),
        "mode": kw.mode_from_disperser(get("DISPERSR")) or "unknown",
        "occulter": _text(get("OCCULTER")),
        "apodizer": _text(get("APODIZER")),
        "lyotmask": _text(get("LYOTMASK")),
        "itime": itime,
        "coadds": coadds,
        "date_obs": date_obs,
        "utstart": _text(get("UTSTART")),
        "mjd_obs": mjd,
        "datalab": datalab,
        "obsid": _text(get("OBSID")),
        "program": _text(get("GEMPRGID")) or kw.program_from_datalab(datalab),
        "wpangle": _number(get("WPANGLE")),
        "gcallamp": _text(get("GCALLAMP")),
        "ra_deg": _number(get("RA")),
        "dec_deg": _number(get("DEC")),
        "ha": _text(get("HA")),
        "par_ang": _number(get("PAR_ANG")),
        "airmass": _number(get("AIRMASS")),
    }


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None
