"""Astropy time and Earth-orientation settings for a machine that may be offline.

cruncher runs at telescopes and on cluster nodes without internet access: astropy must never
try to download IERS tables. The tables bundled with astropy (``astropy-iers-data``) are used;
dates beyond them degrade gracefully to predictions rather than failing.
"""
from __future__ import annotations

from astropy.utils import iers

iers.conf.auto_download = False
iers.conf.auto_max_age = None
iers.conf.iers_degraded_accuracy = "warn"
