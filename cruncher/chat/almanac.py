"""Observing almanac for the chatbot: clocks, Sun and twilight times, and the Moon at Gemini South.

Everything is computed offline with astropy (``cruncher.astrotime`` stops IERS downloads). Sun
events are the times the geometric altitude of the Sun's centre (no refraction: ``pressure=0``)
crosses -0.833 deg (sunset and sunrise: refraction plus semi-diameter), -6, -12 and -18 deg
(civil, nautical and astronomical twilight). They are bracketed on a 10-minute grid over the 24 h
from local noon in one vectorised call, then refined with a few vectorised false-position steps.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import zoneinfo
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.coordinates import AltAz, EarthLocation, get_body
from astropy.time import Time

import cruncher.astrotime  # noqa: F401  (offline IERS settings; must come before any astropy use)
from cruncher.instruments.gpi.optics import SITE_HEIGHT_M, SITE_LATITUDE_DEG, SITE_LONGITUDE_DEG

log = logging.getLogger(__name__)

SITE_NAME = "Gemini South"
LOCATION = EarthLocation.from_geodetic(lon=SITE_LONGITUDE_DEG * u.deg, lat=SITE_LATITUDE_DEG * u.deg,
                                       height=SITE_HEIGHT_M * u.m)
CHILE = zoneinfo.ZoneInfo("America/Santiago")
UTC = dt.UTC

#: Event name -> (Sun's centre altitude in deg, True for the evening/falling crossing), in night order.
SUN_EVENTS: dict[str, tuple[float, bool]] = {
    "sunset": (-0.833, True), "civil_dusk": (-6.0, True), "nautical_dusk": (-12.0, True),
    "astronomical_dusk": (-18.0, True), "astronomical_dawn": (-18.0, False),
    "nautical_dawn": (-12.0, False), "civil_dawn": (-6.0, False), "sunrise": (-0.833, False),
}
_GRID_STEP_S = 600.0
_TOLERANCE_S = 1.0

#: Lower-case aliases for time zones people type in a chat.
ZONE_ALIASES: dict[str, str] = {
    "chile": "America/Santiago", "clt": "America/Santiago", "clst": "America/Santiago",
    "santiago": "America/Santiago", "la serena": "America/Santiago", "gemini south": "America/Santiago",
    "hst": "Pacific/Honolulu", "ht": "Pacific/Honolulu", "hawaii": "Pacific/Honolulu",
    "hilo": "Pacific/Honolulu", "gemini north": "Pacific/Honolulu",
    "pst": "America/Los_Angeles", "pdt": "America/Los_Angeles", "pt": "America/Los_Angeles",
    "california": "America/Los_Angeles", "la": "America/Los_Angeles",
    "mt": "America/Denver", "mst": "America/Denver", "ct": "America/Chicago", "cst": "America/Chicago",
    "et": "America/New_York", "est": "America/New_York", "edt": "America/New_York",
    "new york": "America/New_York", "ny": "America/New_York",
    "uk": "Europe/London", "london": "Europe/London", "paris": "Europe/Paris", "cet": "Europe/Paris",
    "utc": "UTC", "gmt": "UTC", "ut": "UTC", "z": "UTC", "zulu": "UTC",
    "lst": "LST", "sidereal": "LST",
}
_ZONE_EXAMPLES = "UTC, LST, Chile, HST, PT, ET, America/Santiago, Pacific/Honolulu"

#: (phase name, emoji, Slack short code) for the eight 45-deg sectors of the synodic cycle.
MOON_PHASES: tuple[tuple[str, str, str], ...] = (
    ("new moon", "\N{NEW MOON SYMBOL}", ":new_moon:"),
    ("waxing crescent", "\N{WAXING CRESCENT MOON SYMBOL}", ":waxing_crescent_moon:"),
    ("first quarter", "\N{FIRST QUARTER MOON SYMBOL}", ":first_quarter_moon:"),
    ("waxing gibbous", "\N{WAXING GIBBOUS MOON SYMBOL}", ":waxing_gibbous_moon:"),
    ("full moon", "\N{FULL MOON SYMBOL}", ":full_moon:"),
    ("waning gibbous", "\N{WANING GIBBOUS MOON SYMBOL}", ":waning_gibbous_moon:"),
    ("last quarter", "\N{LAST QUARTER MOON SYMBOL}", ":last_quarter_moon:"),
    ("waning crescent", "\N{WANING CRESCENT MOON SYMBOL}", ":waning_crescent_moon:"),
)
# Pole of the ecliptic (J2000) in GCRS axes: decides whether the Moon is east of the Sun (waxing).
_OBLIQUITY = np.radians(23.4392911)
_ECLIPTIC_POLE = np.array([0.0, -np.sin(_OBLIQUITY), np.cos(_OBLIQUITY)])


def _utc_now(now: dt.datetime | None) -> dt.datetime:
    """``now`` as an aware UTC datetime (the current time if None; naive datetimes are UTC)."""
    if now is None:
        return dt.datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


# -- clocks ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _iana_by_lower() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def resolve_zone(zone: str) -> str:
    """The IANA name (or ``"UTC"``/``"LST"``) for a zone name or alias, case-insensitively.

    Raises
    ------
    ValueError
        For an unknown zone, with a message listing valid examples.
    """
    key = " ".join(zone.strip().replace("_", " ").split()).lower()
    if key in ZONE_ALIASES:
        return ZONE_ALIASES[key]
    name = _iana_by_lower().get(zone.strip().lower())
    if name is None:
        raise ValueError(f"unknown time zone {zone.strip()!r}; try one of {_ZONE_EXAMPLES}")
    return name


def sidereal_time(now: dt.datetime | None = None) -> float:
    """Local apparent sidereal time at Gemini South, in hours [0, 24)."""
    t = Time(_utc_now(now))
    return float(t.sidereal_time("apparent", longitude=LOCATION.lon).to_value(u.hourangle)) % 24.0


def clock(zone: str, now: dt.datetime | None = None) -> str:
    """The time ``now`` (default: the current time) in ``zone``, as a line for the chat.

    ``zone`` is an IANA name (``America/Santiago``), ``UTC``, ``LST`` (local apparent sidereal
    time at Gemini South) or an alias such as ``Chile``, ``HST``, ``PT`` or ``ET``.
    """
    name, now = resolve_zone(zone), _utc_now(now)
    if name == "LST":
        seconds = round(sidereal_time(now) * 3600.0) % 86400
        return f"LST at {SITE_NAME}: {seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    local = now.astimezone(UTC if name == "UTC" else zoneinfo.ZoneInfo(name))
    return f"{name}: {local:%Y-%m-%d %H:%M:%S %Z}"


# -- the Sun --------------------------------------------------------------------------------------

def _sun_altitude(t: Time) -> np.ndarray:
    """Geometric altitude (deg, no refraction) of the Sun's centre at Gemini South at times ``t``."""
    sun = get_body("sun", t, LOCATION)
    return np.atleast_1d(sun.transform_to(AltAz(obstime=t, location=LOCATION, pressure=0)).alt.deg)


def _refine(jd_a: np.ndarray, jd_b: np.ndarray, f_a: np.ndarray, f_b: np.ndarray,
            levels: np.ndarray) -> np.ndarray:
    """Roots (JD) of altitude - ``levels`` bracketed by [a, b], by vectorised false position."""
    root = jd_a - f_a * (jd_b - jd_a) / (f_b - f_a)
    for _ in range(8):
        f_root = _sun_altitude(Time(root, format="jd", scale="utc")) - levels
        left = np.sign(f_root) == np.sign(f_a)
        jd_a, f_a = np.where(left, root, jd_a), np.where(left, f_root, f_a)
        jd_b, f_b = np.where(left, jd_b, root), np.where(left, f_b, f_root)
        new = jd_a - f_a * (jd_b - jd_a) / (f_b - f_a)
        done = np.max(np.abs(new - root)) * 86400.0 < _TOLERANCE_S
        root = new
        if done:
            break
    return root


def tonight(now: dt.datetime | None = None) -> dt.date:
    """The local date of the evening starting the night that has not yet ended (at sunrise) at ``now``."""
    now = _utc_now(now)
    local = now.astimezone(CHILE)
    if local.hour >= 12:
        return local.date()
    yesterday = local.date() - dt.timedelta(days=1)
    return yesterday if now < sun_events(yesterday)["sunrise"] else local.date()


def sun_events(date: dt.date | None = None, now: dt.datetime | None = None) -> dict[str, dt.datetime]:
    """Sunset, twilights and sunrise (aware UTC datetimes) of the night starting on the evening of
    ``date`` in Chile (default: :func:`tonight`), in the order of :data:`SUN_EVENTS`."""
    return dict(_night_events(tonight(now) if date is None else date))


@functools.lru_cache(maxsize=32)
def _night_events(date: dt.date) -> tuple[tuple[str, dt.datetime], ...]:
    """(event, UTC time to the nearest second) pairs of one night; cached, as chat repeats itself."""
    noon = dt.datetime.combine(date, dt.time(12), tzinfo=CHILE).astimezone(UTC)
    jd = Time(noon).jd + np.arange(0.0, 86400.0 + _GRID_STEP_S, _GRID_STEP_S) / 86400.0
    alt = _sun_altitude(Time(jd, format="jd", scale="utc"))
    names, index = [], []
    for name, (level, falling) in SUN_EVENTS.items():
        above = alt > level
        hits = np.flatnonzero(above[:-1] & ~above[1:] if falling else ~above[:-1] & above[1:])
        if hits.size == 0:
            log.warning("no %s at %s on the night of %s", name, SITE_NAME, date)
            continue
        names.append(name)
        index.append(hits[0])
    if not names:
        return ()
    index = np.array(index, dtype=int)
    levels = np.array([SUN_EVENTS[n][0] for n in names])
    roots = _refine(jd[index], jd[index + 1], alt[index] - levels, alt[index + 1] - levels, levels)
    times = Time(roots, format="jd", scale="utc").to_datetime(timezone=UTC)
    half = dt.timedelta(microseconds=500_000)
    return tuple((name, (when + half).replace(microsecond=0))
                 for name, when in zip(names, np.atleast_1d(times)))


def _chile_time(when: dt.datetime) -> str:
    local = when.astimezone(CHILE)
    return f"{local:%H:%M} {'CLST' if local.dst() else 'CLT'} ({when.astimezone(UTC):%H:%M} UTC)"


_WHICH = {None: tuple(SUN_EVENTS), "sunset": ("sunset",), "sunrise": ("sunrise",),
          "twilight": tuple(name for name in SUN_EVENTS if name not in ("sunset", "sunrise"))}


def sun_lines(date: dt.date | None = None, now: dt.datetime | None = None,
              which: str | None = None) -> str:
    """Sunset, twilights and/or sunrise of a night in Chile local time and UTC, for the chat.

    ``which`` is None (everything), ``"sunset"`` (this evening's), ``"sunrise"`` (the next) or
    ``"twilight"`` (the evening and morning civil, nautical and astronomical twilights).
    """
    if which not in _WHICH:
        raise ValueError(f"which must be one of sunrise, sunset, twilight or None, not {which!r}")
    date = tonight(now) if date is None else date
    events = sun_events(date)
    parts = [f"{name.replace('_', ' ')} {_chile_time(events[name])}"
             for name in _WHICH[which] if name in events]
    return f"{SITE_NAME}, night of {date:%Y-%m-%d}: " + ", ".join(parts)


# -- the Moon -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Moon:
    """The Moon seen from Gemini South at one time."""

    illumination: float  #: fraction 0..1 of the disc lit
    waxing: bool
    phase_name: str
    emoji: str
    shortcode: str  #: Slack-style, e.g. ``:waxing_crescent_moon:``
    altitude_deg: float  #: geometric altitude of the centre (no refraction)


def _phase_index(illumination: float, waxing: bool) -> int:
    """Which of the eight 45-deg sectors of :data:`MOON_PHASES` the Moon is in."""
    elongation = math.degrees(math.acos(min(1.0, max(-1.0, 1.0 - 2.0 * illumination))))
    return round((elongation if waxing else 360.0 - elongation) / 45.0) % 8


def moon(now: dt.datetime | None = None) -> Moon:
    """Illumination, phase and altitude of the Moon at Gemini South at ``now`` (default: now).

    The phase angle ``i`` is the angle at the Moon between the Sun and the observer (topocentric
    positions); the lit fraction is ``k = (1 + cos i) / 2``.
    """
    t = Time(_utc_now(now))
    sun_xyz = get_body("sun", t, LOCATION).cartesian.xyz.to_value(u.km)
    body = get_body("moon", t, LOCATION)
    moon_xyz = body.cartesian.xyz.to_value(u.km)
    to_sun, to_observer = sun_xyz - moon_xyz, -moon_xyz
    cos_i = to_sun @ to_observer / (np.linalg.norm(to_sun) * np.linalg.norm(to_observer))
    illumination = float((1.0 + cos_i) / 2.0)
    waxing = bool(np.cross(sun_xyz, moon_xyz) @ _ECLIPTIC_POLE > 0)
    altitude = float(body.transform_to(AltAz(obstime=t, location=LOCATION, pressure=0)).alt.deg)
    name, emoji, shortcode = MOON_PHASES[_phase_index(illumination, waxing)]
    return Moon(illumination, waxing, name, emoji, shortcode, altitude)


def moon_line(now: dt.datetime | None = None) -> str:
    """E.g. ``:waxing_gibbous_moon: Moon 78% illuminated (waxing gibbous), 34 deg above the horizon
    at Gemini South``."""
    m = moon(now)
    where = "above" if m.altitude_deg >= 0 else "below"
    return (f"{m.shortcode} Moon {100 * m.illumination:.0f}% illuminated ({m.phase_name}), "
            f"{abs(m.altitude_deg):.0f} deg {where} the horizon at {SITE_NAME}")
