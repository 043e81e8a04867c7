"""Recording products: ``reduced`` rows, their ``raw2reduced`` links and ``contrast`` curves."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, select

from cruncher.db import schema
from cruncher.db.engine import utcnow, write
from cruncher.instruments.gpi.keywords import canonical_name, normalise_object

#: Fiducial separations (arcsec) whose contrast is kept on the ``reduced`` row.
FIDUCIAL_SEPARATIONS = {"contrast_025": 0.25, "contrast_040": 0.4, "contrast_080": 0.8}


def path_key(path: str | os.PathLike) -> str:
    """The unique key of a product path (a hash: long paths exceed index limits)."""
    return hashlib.sha1(str(Path(path).absolute()).encode("utf-8", "surrogatepass")).hexdigest()


def record_product(engine: Engine, *, path: str | os.PathLike, kind: str,
                   inputs: Iterable[str] = (), grade: str = "science",
                   target: str | None = None, band: str | None = None, mode: str | None = None,
                   date_obs=None, params: Mapping[str, Any] | None = None,
                   software: str | None = None, job_id: str | None = None,
                   fiducial: Mapping[str, float | None] | None = None,
                   satspot_flux: float | None = None) -> int:
    """Insert or update the ``reduced`` row of ``path`` and link it to its raw inputs.

    ``inputs`` are raw frames by path or name; those not in the ``raw`` table are not linked.
    Recording the same product again replaces its row's values and its links.

    Returns
    -------
    int
        The ``reduced.id`` of the product.
    """
    path = str(Path(path).absolute())
    names = sorted({canonical_name(i) for i in inputs})
    now = utcnow()
    values = {
        "path": path, "path_key": path_key(path), "filename": Path(path).name, "kind": kind,
        "grade": grade, "object": target, "object_key": normalise_object(target) if target else None,
        "band": band, "mode": mode, "date_obs": date_obs, "n_inputs": len(names),
        "params": json.dumps(dict(params), default=str) if params else None,
        "software": software, "job_id": job_id, "satspot_flux": satspot_flux, "updated_at": now,
    }
    values.update({k: (fiducial or {}).get(k) for k in FIDUCIAL_SEPARATIONS})

    def record(conn: Connection) -> int:
        reduced_id, new = _upsert(conn, values, now)
        _link(conn, reduced_id, names, new=new)
        return reduced_id

    return write(engine, record)


def _upsert(conn: Connection, values: dict[str, Any], now) -> tuple[int, bool]:
    """The ``reduced.id`` of the row written, and whether the row is new."""
    table = schema.reduced
    existing = conn.execute(select(table.c.id).where(table.c.path_key == values["path_key"]))
    found = existing.scalar()
    if found is None:
        result = conn.execute(table.insert().values(**values, created_at=now))
        return int(result.inserted_primary_key[0]), True
    conn.execute(table.update().where(table.c.id == found).values(**values))
    return int(found), False


def _link(conn: Connection, reduced_id: int, names: Sequence[str], *, new: bool) -> None:
    link = schema.raw2reduced
    if not new:
        # Only for a row recorded before: on InnoDB, deleting rows that do not exist locks the
        # gap where they would be, and concurrent inserts into that gap then deadlock.
        conn.execute(delete(link).where(link.c.reduced_id == reduced_id))
    if not names:
        return
    raw_ids = conn.execute(select(schema.raw.c.id).where(schema.raw.c.filename.in_(names)))
    rows = [{"raw_id": rid, "reduced_id": reduced_id} for rid in raw_ids.scalars()]
    if rows:
        conn.execute(link.insert(), rows)


def record_contrast(engine: Engine, reduced_id: int, planet_type: str,
                    separations_arcsec: Sequence[float], contrasts: Sequence[float], *,
                    calibrated: bool, pixel_scale: float | None = None) -> None:
    """Replace the contrast curve of one product and planet type."""
    table = schema.contrast
    rows = [{"reduced_id": reduced_id, "planet_type": planet_type, "calibrated": calibrated,
             "separation_arcsec": float(sep),
             "separation_px": float(sep) / pixel_scale if pixel_scale else None,
             "contrast": None if c is None or c != c else float(c)}
            for sep, c in zip(separations_arcsec, contrasts, strict=True)]

    def replace(conn: Connection) -> None:
        conn.execute(delete(table).where(table.c.reduced_id == reduced_id,
                                         table.c.planet_type == planet_type))
        if rows:
            conn.execute(table.insert(), rows)

    write(engine, replace)


def record_detections(engine: Engine, reduced_id: int, detections: Sequence[Mapping[str, Any]],
                      kl: int | None = None) -> None:
    """Replace the point sources found in one product (best first)."""
    table = schema.detections
    rows = [{"reduced_id": reduced_id, "rank": i, "x": d["x"], "y": d["y"],
             "separation_arcsec": d["sep_arcsec"], "pa_deg": d["pa_deg"], "snr": d["snr"],
             "kl": kl} for i, d in enumerate(detections)]

    def replace(conn: Connection) -> None:
        conn.execute(delete(table).where(table.c.reduced_id == reduced_id))
        if rows:
            conn.execute(table.insert(), rows)

    write(engine, replace)
