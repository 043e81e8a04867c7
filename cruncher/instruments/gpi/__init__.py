"""The Gemini Planet Imager: keywords, raw-file reading and (in ``sim``) simulated nights."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cruncher.instruments.gpi import keywords


def raw_record(path: str | Path) -> dict[str, Any]:
    """The ``raw`` table row of a raw frame (see :mod:`cruncher.instruments.gpi.rawfile`)."""
    from cruncher.instruments.gpi.rawfile import raw_record as read

    return read(path)


__all__ = ["keywords", "raw_record"]
