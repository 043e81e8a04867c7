"""The chatbot's almanac against independent low-precision formulas (Meeus, IAU 1982 GMST).

The references are implemented here without astropy, so a wrong site, time scale, altitude
definition or phase-angle geometry in ``cruncher.chat.almanac`` shows up as a disagreement.
"""
from __future__ import annotations

import datetime as dt
import math
import re
import zoneinfo

import pytest

import cruncher.astrotime  # noqa: F401  (offline IERS settings, before astropy is used)
from cruncher.chat import almanac

UTC = dt.UTC
LAT, LON = -30.24075, -70.73669  # Gemini South, deg (longitude positive east)
NIGHTS = [dt.date(2016, 3, 15), dt.date(2026, 6, 21), dt.date(2026, 12, 21)]
TWO_MINUTES = 120.0
# Altitude of the Sun's centre (deg, no refraction) at each event, and whether it is the evening one.
EVENTS = {"sunset": (-0.833, True), "civil_dusk": (-6.0, True), "nautical_dusk": (-12.0, True),
          "astronomical_dusk": (-18.0, True), "astronomical_dawn": (-18.0, False),
          "nautical_dawn": (-12.0, False), "civil_dawn": (-6.0, False), "sunrise": (-0.833, False)}


# -- independent references ------------------------------------------------------------------------

def reference_event(date: dt.date, altitude_deg: float, rising: bool, hour_guess: float) -> dt.datetime:
    """UTC time the Sun's centre crosses ``altitude_deg`` on the UTC day ``date``.

    Low-precision solar position from the day number n = JD - 2451545 (Meeus ch. 25 / the
    Astronomical Almanac, ~0.01 deg): mean longitude L, mean anomaly g, ecliptic longitude
    lambda = L + 1.915 sin g + 0.020 sin 2g, obliquity eps, right ascension and declination of date,
    equation of time 4 (L - alpha) minutes. Hour angle from the sunrise equation
    cos H = (sin h0 - sin(lat) sin(dec)) / (cos(lat) cos(dec)); event = 720 - 4 (lon +- H) - eqtime
    minutes after 0h UT. Evaluated at the event time by iteration. (The NOAA Fourier series for
    declination and equation of time was tried first: it is off by 0.27 deg in declination in March
    2016, which put its sunsets 75 s late, too close to the tolerance to be a useful reference.)
    """
    minutes = hour_guess * 60
    for _ in range(3):
        n = date.toordinal() - dt.date(2000, 1, 1).toordinal() - 0.5 + minutes / 1440
        mean_longitude = 280.460 + 0.9856474 * n
        g = math.radians(357.528 + 0.9856003 * n)
        lam = math.radians(mean_longitude + 1.915 * math.sin(g) + 0.020 * math.sin(2 * g))
        eps = math.radians(23.439 - 0.0000004 * n)
        alpha = math.degrees(math.atan2(math.cos(eps) * math.sin(lam), math.cos(lam)))
        dec = math.asin(math.sin(eps) * math.sin(lam))
        eqtime = 4 * ((mean_longitude - alpha + 180) % 360 - 180)
        lat = math.radians(LAT)
        cos_h = (math.sin(math.radians(altitude_deg)) - math.sin(lat) * math.sin(dec)) \
            / (math.cos(lat) * math.cos(dec))
        h = math.degrees(math.acos(cos_h))
        minutes = 720 - 4 * (LON + (h if rising else -h)) - eqtime
    return dt.datetime.combine(date, dt.time(0), tzinfo=UTC) + dt.timedelta(minutes=minutes)


def reference_night(night: dt.date) -> dict[str, dt.datetime]:
    """The evening events fall on the UTC day ``night`` or just after; the morning ones the next day."""
    out = {}
    for name, (level, falling) in EVENTS.items():
        if falling:
            out[name] = reference_event(night, level, rising=False, hour_guess=23.5)
        else:
            out[name] = reference_event(night + dt.timedelta(days=1), level, rising=True, hour_guess=9.5)
    return out


def meeus_illumination(when: dt.datetime) -> tuple[float, float]:
    """Geocentric lit fraction k and mean elongation D (deg) of the Moon, Meeus chapter 48 (low precision)."""
    jde = when.timestamp() / 86400.0 + 2440587.5 + 69.0 / 86400.0  # TT - UTC ~ 69 s in 2016-2026
    t = (jde - 2451545.0) / 36525.0
    d = 297.8501921 + 445267.1114034 * t - 0.0018819 * t**2 + t**3 / 545868 - t**4 / 113065000
    m = 357.5291092 + 35999.0502909 * t - 0.0001536 * t**2 + t**3 / 24490000
    mp = 134.9633964 + 477198.8675055 * t + 0.0087414 * t**2 + t**3 / 69699 - t**4 / 14712000

    def s(x):
        return math.sin(math.radians(x))

    i = (180 - d - 6.289 * s(mp) + 2.100 * s(m) - 1.274 * s(2 * d - mp) - 0.658 * s(2 * d)
         - 0.214 * s(2 * mp) - 0.110 * s(d))
    return (1 + math.cos(math.radians(i))) / 2, d % 360


def local_apparent_sidereal_hours(when: dt.datetime) -> float:
    """IAU 1982 GMST (UT ~ UTC) + the site longitude + the equation of the equinoxes (Meeus ch. 22)."""
    d = when.timestamp() / 86400.0 + 2440587.5 - 2451545.0
    gmst = 18.697374558 + 24.06570982441908 * d
    t = d / 36525.0
    omega, sun, moon = (math.radians(x) for x in (125.04452 - 1934.136261 * t, 280.4665 + 36000.7698 * t,
                                                  218.3165 + 481267.8813 * t))
    dpsi_arcsec = (-17.20 * math.sin(omega) - 1.32 * math.sin(2 * sun) - 0.23 * math.sin(2 * moon)
                   + 0.21 * math.sin(2 * omega))
    eqeq_hours = dpsi_arcsec * math.cos(math.radians(23.4393)) / 15.0 / 3600.0
    return (gmst + eqeq_hours + LON / 15.0) % 24.0


def hours_apart(a: float, b: float) -> float:
    return abs((a - b + 12.0) % 24.0 - 12.0)


# -- the Sun ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("night", NIGHTS, ids=str)
def test_sun_events_agree_with_low_precision_sun_within_two_minutes(night):
    events, reference = almanac.sun_events(night), reference_night(night)
    assert list(events) == list(EVENTS)
    for name, when in events.items():
        assert when.tzinfo is not None and when.utcoffset() == dt.timedelta(0)
        diff = abs((when - reference[name]).total_seconds())
        print(f"{night} {name}: almanac {when:%H:%M:%S}, reference {reference[name]:%H:%M:%S}, {diff:.0f} s")
        assert diff < TWO_MINUTES, (name, when, reference[name])


def test_sunrise_sunset_literal_2016_03_15():
    # Worked by hand from the low-precision equations above, iterated to the event time.
    # Sunrise on the morning of the 15th (ending the night of the 14th): n = 5917.947, L = 353.469,
    # g = 70.258, lambda = 355.284, alpha = 355.672 deg, dec = -1.874 deg, eqtime = 4 (L - alpha)
    # = -8.811 min, H = 92.058 deg -> 720 - 4 (-70.73669 + 92.058) + 8.811 = 643.53 min = 10:43:32 UTC.
    # Sunset that evening: n = 5918.458, dec = -1.672 deg, eqtime = -8.666 min, H = 91.940 deg
    # -> 720 - 4 (-70.73669 - 91.940) + 8.666 = 1379.37 min = 22:59:22 UTC (19:59 local, UTC-3).
    sunrise_reference = dt.datetime(2016, 3, 15, 10, 43, 32, tzinfo=UTC)
    sunset_reference = dt.datetime(2016, 3, 15, 22, 59, 22, tzinfo=UTC)
    sunrise = almanac.sun_events(dt.date(2016, 3, 14))["sunrise"]
    sunset = almanac.sun_events(dt.date(2016, 3, 15))["sunset"]
    print(f"sunrise {(sunrise - sunrise_reference).total_seconds():+.0f} s, "
          f"sunset {(sunset - sunset_reference).total_seconds():+.0f} s")
    assert abs((sunrise - sunrise_reference).total_seconds()) < TWO_MINUTES
    assert abs((sunset - sunset_reference).total_seconds()) < TWO_MINUTES


@pytest.mark.parametrize("night", NIGHTS, ids=str)
def test_twilights_are_ordered_and_at_their_altitudes(night):
    from astropy.coordinates import AltAz, get_body
    from astropy.time import Time

    events = almanac.sun_events(night)
    times = list(events.values())
    assert times == sorted(times) and len(set(times)) == len(times)
    assert dt.timedelta(hours=8) < times[-1] - times[0] < dt.timedelta(hours=16)
    t = Time(times)
    alt = get_body("sun", t, almanac.LOCATION).transform_to(
        AltAz(obstime=t, location=almanac.LOCATION, pressure=0)).alt.deg
    for (name, (level, _)), altitude in zip(EVENTS.items(), alt):
        assert abs(altitude - level) < 0.05, (name, altitude, level)


def test_tonight_is_the_night_not_yet_ended():
    night = dt.date(2026, 11, 21)
    sunrise = almanac.sun_events(night)["sunrise"]
    assert almanac.tonight(dt.datetime(2026, 11, 21, 20, 0, tzinfo=UTC)) == night  # 17:00 local
    assert almanac.tonight(sunrise - dt.timedelta(minutes=5)) == night
    assert almanac.tonight(sunrise + dt.timedelta(minutes=5)) == night + dt.timedelta(days=1)
    assert almanac.sun_events(now=sunrise - dt.timedelta(hours=3)) == almanac.sun_events(night)


def test_sun_lines_choose_events_and_show_both_times():
    night = dt.date(2026, 6, 21)
    events = almanac.sun_events(night)
    full = almanac.sun_lines(night)
    assert full.startswith("Gemini South, night of 2026-06-21: sunset ")
    sunset_local = events["sunset"].astimezone(zoneinfo.ZoneInfo("America/Santiago"))
    assert f"sunset {sunset_local:%H:%M} CLT ({events['sunset']:%H:%M} UTC)" in full  # winter: UTC-4
    assert full.count(" UTC)") == 8
    assert re.fullmatch(r"Gemini South, night of 2026-06-21: sunrise \d\d:\d\d CLT \(\d\d:\d\d UTC\)",
                        almanac.sun_lines(night, which="sunrise"))
    twilight = almanac.sun_lines(night, which="twilight")
    assert "civil dusk" in twilight and "astronomical dawn" in twilight and "sunset" not in twilight
    assert "CLST" in almanac.sun_lines(dt.date(2026, 12, 21), which="sunset")  # summer time
    with pytest.raises(ValueError):
        almanac.sun_lines(night, which="moonrise")


# -- the Moon --------------------------------------------------------------------------------------

MOON_TIMES = [
    dt.datetime(2026, 11, 24, 15, 0, tzinfo=UTC),  # full moon (Meeus k = 1.000)
    dt.datetime(2026, 11, 9, 7, 0, tzinfo=UTC),  # new moon (Meeus k = 0.000)
    dt.datetime(2016, 3, 15, 3, 0, tzinfo=UTC),  # near first quarter
    dt.datetime(2026, 11, 12, 3, 0, tzinfo=UTC),  # waxing crescent
    dt.datetime(2026, 11, 21, 21, 0, tzinfo=UTC),  # waxing gibbous
    dt.datetime(2026, 11, 28, 6, 0, tzinfo=UTC),  # waning gibbous
    dt.datetime(2026, 12, 5, 9, 0, tzinfo=UTC),  # waning crescent
]
EMOJI = {"new moon": ("🌑", ":new_moon:"), "waxing crescent": ("🌒", ":waxing_crescent_moon:"),
         "first quarter": ("🌓", ":first_quarter_moon:"), "waxing gibbous": ("🌔", ":waxing_gibbous_moon:"),
         "full moon": ("🌕", ":full_moon:"), "waning gibbous": ("🌖", ":waning_gibbous_moon:"),
         "last quarter": ("🌗", ":last_quarter_moon:"), "waning crescent": ("🌘", ":waning_crescent_moon:")}


@pytest.mark.parametrize("when", MOON_TIMES, ids=lambda w: f"{w:%Y-%m-%dT%H}")
def test_moon_illumination_agrees_with_meeus(when):
    m, (k, elongation) = almanac.moon(when), meeus_illumination(when)
    print(f"{when:%Y-%m-%d %H:%M}: almanac {m.illumination:.4f}, Meeus {k:.4f}, "
          f"diff {m.illumination - k:+.4f}")
    assert abs(m.illumination - k) < 0.02
    if 0.03 < k < 0.97:
        assert m.waxing == (elongation < 180.0)
    assert (m.emoji, m.shortcode) == EMOJI[m.phase_name]


def test_known_full_and_new_moon():
    full, new = almanac.moon(MOON_TIMES[0]), almanac.moon(MOON_TIMES[1])
    assert full.illumination > 0.99 and full.phase_name == "full moon" and full.emoji == "🌕"
    assert new.illumination < 0.01 and new.phase_name == "new moon" and new.emoji == "🌑"


def test_phase_names_consistent_with_waxing_and_illumination():
    seen = set()
    for day in range(0, 30, 2):
        m = almanac.moon(dt.datetime(2026, 11, 9, 7, tzinfo=UTC) + dt.timedelta(days=day, hours=5))
        seen.add(m.phase_name)
        assert (m.emoji, m.shortcode) == EMOJI[m.phase_name]
        if "waxing" in m.phase_name or m.phase_name == "first quarter":
            assert m.waxing
        if "waning" in m.phase_name or m.phase_name == "last quarter":
            assert not m.waxing
        if "gibbous" in m.phase_name:
            assert 0.5 < m.illumination < 0.97
        if "crescent" in m.phase_name:
            assert 0.03 < m.illumination < 0.5
        if "quarter" in m.phase_name:
            assert 0.25 < m.illumination < 0.75
        assert -90 <= m.altitude_deg <= 90
    assert seen == set(EMOJI)


def test_moon_line():
    line = almanac.moon_line(MOON_TIMES[4])
    m = almanac.moon(MOON_TIMES[4])
    assert line == (f":waxing_gibbous_moon: Moon {100 * m.illumination:.0f}% illuminated (waxing gibbous), "
                    f"{abs(m.altitude_deg):.0f} deg {'above' if m.altitude_deg >= 0 else 'below'} "
                    "the horizon at Gemini South")


# -- clocks ----------------------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 21, 21, 3, 55, tzinfo=UTC)


@pytest.mark.parametrize(("zone", "expected"), [
    ("UTC", "UTC: 2026-11-21 21:03:55 UTC"),
    ("utc", "UTC: 2026-11-21 21:03:55 UTC"),
    ("America/Santiago", "America/Santiago: 2026-11-21 18:03:55 -03"),
    ("chile", "America/Santiago: 2026-11-21 18:03:55 -03"),
    ("HST", "Pacific/Honolulu: 2026-11-21 11:03:55 HST"),
    ("pacific/honolulu", "Pacific/Honolulu: 2026-11-21 11:03:55 HST"),
    ("California", "America/Los_Angeles: 2026-11-21 13:03:55 PST"),
    ("New York", "America/New_York: 2026-11-21 16:03:55 EST"),
])
def test_clock_fixed_now(zone, expected):
    assert almanac.clock(zone, NOW) == expected


@pytest.mark.parametrize("zone", ["UTC", "America/Santiago", "Pacific/Honolulu"])
def test_clock_now_matches_datetime_now(zone):
    tz = UTC if zone == "UTC" else zoneinfo.ZoneInfo(zone)
    text = almanac.clock(zone)
    shown = dt.datetime.strptime(text.split(": ", 1)[1][:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz)
    assert abs((shown - dt.datetime.now(tz)).total_seconds()) < 1.5  # shown is truncated to the second


@pytest.mark.parametrize("when", [dt.datetime(2016, 3, 15, 3, 0, tzinfo=UTC), NOW,
                                  dt.datetime(2026, 6, 21, 4, 30, 12, tzinfo=UTC)], ids=str)
def test_lst_against_iau1982_gmst(when):
    reference = local_apparent_sidereal_hours(when)
    value = almanac.sidereal_time(when)
    print(f"{when}: almanac {value:.6f} h, reference {reference:.6f} h, "
          f"diff {hours_apart(value, reference) * 3600:.2f} s")
    assert hours_apart(value, reference) * 3600 < 2.0
    text = almanac.clock("LST", when)
    match = re.fullmatch(r"LST at Gemini South: (\d\d):(\d\d):(\d\d)", text)
    assert match, text
    h, m, s = (int(x) for x in match.groups())
    assert hours_apart(h + m / 60 + s / 3600, reference) * 3600 < 2.0


@pytest.mark.parametrize("zone", ["Mars", "Europe/Atlantis", ""])
def test_unknown_zone_names_examples(zone):
    with pytest.raises(ValueError, match="UTC.*America/Santiago"):
        almanac.clock(zone, NOW)
