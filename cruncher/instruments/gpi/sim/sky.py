"""The sky as the simulator sees it: hour and parallactic angles at Gemini South.

This is the simulator's truth, computed independently of the DRP: with astropy's full AltAz
transformation, the parallactic angle is the position angle of the zenith seen from the target.
"""
from __future__ import annotations

import numpy as np
from astropy import units as u
from astropy.coordinates import AltAz, EarthLocation, SkyCoord
from astropy.time import Time

import cruncher.astrotime  # noqa: F401  (offline IERS settings)
from cruncher.instruments.gpi.optics import SITE_HEIGHT_M, SITE_LATITUDE_DEG, SITE_LONGITUDE_DEG

GEMINI_SOUTH = EarthLocation.from_geodetic(lon=SITE_LONGITUDE_DEG * u.deg,
                                           lat=SITE_LATITUDE_DEG * u.deg, height=SITE_HEIGHT_M * u.m)


def parallactic_angles(ra_deg: float, dec_deg: float, times: Time) -> np.ndarray:
    """Parallactic angle (deg, east of north) of the target at each of ``times``."""
    target = SkyCoord(ra=ra_deg * u.deg, dec=dec_deg * u.deg, frame="icrs")
    frame = AltAz(obstime=times, location=GEMINI_SOUTH)
    zenith = SkyCoord(alt=np.full(len(times), 90.0) * u.deg, az=np.zeros(len(times)) * u.deg,
                      frame=frame).transform_to("icrs")
    return target.position_angle(zenith).wrap_at(180 * u.deg).to_value(u.deg)


def hour_angles(ra_deg: float, times: Time) -> np.ndarray:
    """Hour angle (hours, -12..12) of the target at ``times`` (mean sidereal time is enough)."""
    lst = times.sidereal_time("mean", longitude=SITE_LONGITUDE_DEG * u.deg).to_value(u.hourangle)
    return (lst - ra_deg / 15.0 + 12.0) % 24.0 - 12.0


def airmass(ra_deg: float, dec_deg: float, times: Time) -> np.ndarray:
    target = SkyCoord(ra=ra_deg * u.deg, dec=dec_deg * u.deg, frame="icrs")
    altaz = target.transform_to(AltAz(obstime=times, location=GEMINI_SOUTH))
    return 1.0 / np.sin(np.radians(altaz.alt.to_value(u.deg)))


def transit_time(ra_deg: float, date: Time) -> Time:
    """The UT time near ``date`` at which the target crosses the meridian."""
    ha = hour_angles(ra_deg, Time([date]))[0]
    return date - ha * 0.99727 * u.hour
