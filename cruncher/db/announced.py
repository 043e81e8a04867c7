"""Products as a backend announces them, into the database.

A backend records each product it announces (a :class:`ProductReady` event) as it goes. On a
cluster there is no database: each ``super_cruncher`` rank appends its backend's announcements to
a manifest (``products.jsonl``) instead, and ``cruncher db ingest-products`` records them where
the database is, through the same function, once the products are back.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astropy.io import fits
from sqlalchemy import Engine

from cruncher import __version__
from cruncher.db.products import record_contrast, record_detections, record_product
from cruncher.errors import CruncherError
from cruncher.instruments.gpi.keywords import band_from_filter
from cruncher.instruments.gpi.optics import LENSLET_SCALE
from cruncher.messages import ProductReady, event_from_json
from cruncher.pathmap import remap

_log = logging.getLogger(__name__)
MANIFEST = "products.jsonl"


def record_cube(engine: Engine, cube: str, raw: str) -> int:
    """A datacube's row, linked to its raw frame; target and band from its header."""
    header = fits.getheader(cube)
    return record_product(engine, path=cube, kind="spdc", inputs=[raw],
                          target=header.get("OBJECT"), mode="spec",
                          band=band_from_filter(header.get("IFSFILT")),
                          software=header.get("DRPVER"))


def record_announced(engine: Engine, event: ProductReady, *,
                     params: Mapping[str, Any] | None = None) -> int:
    """The rows of one announced product: ``reduced``, its raw links, contrast, detections."""
    if event.kind == "spdc":
        return record_cube(engine, event.path, event.inputs[0])
    extras = event.extras or {}
    reduced_id = record_product(engine, path=event.path, kind=event.kind, inputs=event.inputs,
                                grade=event.grade, job_id=event.job_id, params=params,
                                target=event.target, band=event.band, mode=event.mode,
                                date_obs=_date(event.date), fiducial=extras.get("fiducial"),
                                software=f"cruncher {__version__}")
    if "contrast" in extras and "separation_arcsec" in extras:
        record_contrast(engine, reduced_id, extras.get("planet_type", "?"),
                        extras["separation_arcsec"], extras["contrast"],
                        calibrated=bool(extras.get("calibrated")), pixel_scale=LENSLET_SCALE)
    if extras.get("detections") is not None:
        record_detections(engine, reduced_id, extras["detections"], extras.get("detection_kl"))
    return reduced_id


def _date(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(text)[:10]) if text else None
    except ValueError:
        return None


# --- manifests ----------------------------------------------------------------------------------


def append_to_manifest(path: Path, event: ProductReady) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(event.to_json() + "\n")


@dataclass
class ManifestReport:
    recorded: int = 0
    missing: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    manifests: int = 0


def ingest_manifests(engine: Engine, root: str | os.PathLike, *,
                     prefixes: Mapping[str, str] | None = None) -> ManifestReport:
    """Record every product announced in the manifests under ``root``; products no longer on
    disk are listed, not recorded. Recording again changes nothing (rows are upserted)."""
    report = ManifestReport()
    for manifest in sorted(Path(root).rglob(MANIFEST)):
        report.manifests += 1
        for number, line in enumerate(manifest.read_text(errors="replace").splitlines(), 1):
            where = f"{manifest}:{number}"
            try:
                event = _moved(event_from_json(line), prefixes or {})
                if event.type != "product":
                    continue
                if not os.path.exists(event.path):
                    report.missing.append(event.path)
                    continue
                record_announced(engine, event)
                report.recorded += 1
            except (CruncherError, OSError, ValueError, KeyError, IndexError) as exc:
                report.failed.append((where, str(exc)))
                _log.warning("%s: not recorded (%s)", where, exc)
    return report


def _moved(event, prefixes: Mapping[str, str]):
    if event.type != "product" or not prefixes:
        return event
    import dataclasses

    return dataclasses.replace(event, path=remap(event.path, prefixes),
                               inputs=tuple(remap(i, prefixes) for i in event.inputs))
