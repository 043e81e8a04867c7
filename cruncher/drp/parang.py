"""The exposure-averaged parallactic angle (AVPARANG) of a frame, from its headers.

The parallactic angle ``q = atan2(sin H, tan(phi) cos(dec) - sin(dec) cos(H))`` is evaluated
through the exposure (from UTSTART for ITIME x COADDS seconds), with the hour angle from the
apparent sidereal time at Gemini South and the target's coordinates precessed to the date, and
averaged (unwrapped, so transits through 180 deg average correctly).

That formula measures the angle from the pole *of date*. Images are derotated to J2000 (ICRS)
north, which at the target differs from the pole of date by precession (0.06 deg after 14 years
at dec -69): the angle of the pole of date seen in J2000 is added.
"""
from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.coordinates import FK5, SkyCoord
from astropy.time import Time

import cruncher.astrotime  # noqa: F401  (offline IERS settings)
from cruncher.errors import BadInputError
from cruncher.instruments.gpi.optics import SITE_LATITUDE_DEG, SITE_LONGITUDE_DEG

SAMPLES = 21


def parallactic_angle(hour_angle_rad, dec_rad, latitude_rad) -> np.ndarray:
    """Parallactic angle in degrees (east of north, the zenith's direction from the target)."""
    q = np.arctan2(np.sin(hour_angle_rad),
                   np.tan(latitude_rad) * np.cos(dec_rad) - np.sin(dec_rad) * np.cos(hour_angle_rad))
    return np.degrees(q)


def exposure_times(date_obs: str, utstart: str, seconds: float, samples: int = SAMPLES) -> Time:
    start = Time(f"{str(date_obs).strip()[:10]}T{str(utstart).strip()}", scale="utc")
    return start + np.linspace(0.0, seconds, samples) * u.s


def average_parallactic_angle(ra_deg: float, dec_deg: float, date_obs: str, utstart: str,
                              seconds: float) -> float:
    """AVPARANG (deg) of an exposure of ``seconds`` starting at ``date_obs`` ``utstart``."""
    try:
        times = exposure_times(date_obs, utstart, seconds)
    except ValueError as exc:
        raise BadInputError("<header>", f"unreadable DATE-OBS/UTSTART: {exc}") from None
    of_date = SkyCoord(ra=ra_deg * u.deg, dec=dec_deg * u.deg, frame=FK5(equinox="J2000")) \
        .transform_to(FK5(equinox=times[len(times) // 2]))
    lst = times.sidereal_time("apparent", longitude=SITE_LONGITUDE_DEG * u.deg)
    hour_angle = (lst - of_date.ra).to_value(u.rad)
    q = parallactic_angle(hour_angle, of_date.dec.to_value(u.rad), np.radians(SITE_LATITUDE_DEG))
    mean = float(np.degrees(np.mean(np.unwrap(np.radians(q)))))
    return mean + _pole_of_date_angle(of_date)


def _pole_of_date_angle(of_date: SkyCoord) -> float:
    """Position angle (deg, in J2000) of the direction to the pole of date at the target."""
    north = SkyCoord(ra=of_date.ra, dec=of_date.dec + 1 * u.arcmin, frame=of_date.frame)
    target = of_date.transform_to(FK5(equinox="J2000"))
    return float(target.position_angle(north.transform_to(FK5(equinox="J2000")))
                 .wrap_at(180 * u.deg).to_value(u.deg))


def from_headers(primary, extension) -> float:
    """AVPARANG from a raw frame's primary and SCI headers."""
    def get(key):
        for header in (primary, extension):
            if key in header:
                return header[key]
        raise BadInputError("<header>", f"missing keyword {key} for the parallactic angle")

    seconds = float(get("ITIME")) * int(get("COADDS"))
    return average_parallactic_angle(float(get("RA")), float(get("DEC")), get("DATE-OBS"),
                                     get("UTSTART"), seconds)
