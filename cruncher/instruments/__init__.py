"""What is specific to an instrument: header vocabulary, file naming, simulated data.

GPI is the only instrument so far; code outside this package asks for an instrument by name
(:func:`get`) rather than importing GPI modules, so another IFS can be added as a sibling package.
"""
from __future__ import annotations

import importlib
from types import ModuleType

INSTRUMENTS = {"gpi": "cruncher.instruments.gpi"}


def get(name: str = "gpi") -> ModuleType:
    """The instrument package ``name``; it provides ``raw_record(path)`` and ``keywords``."""
    try:
        return importlib.import_module(INSTRUMENTS[name.lower()])
    except KeyError:
        raise ValueError(f"unknown instrument {name!r} (known: {', '.join(INSTRUMENTS)})") from None
