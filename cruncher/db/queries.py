"""Questions the instructors and the backend ask the database.

Raw files by target, band, dates, mode and program (never the bad ones unless asked); the bad
flag of a file (its latest note's); products of a raw file; raw inputs of a product; close
matches for a misspelt target.
"""
from __future__ import annotations

import datetime as dt
import difflib
import getpass
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, Engine, RowMapping, and_, bindparam, func, select

from cruncher.db import schema
from cruncher.db.engine import reading, utcnow, write
from cruncher.db.products import path_key
from cruncher.instruments.gpi.keywords import canonical_name, normalise_object

_CHUNK = 500


def _latest_notes():
    """Subquery: the newest note of every file that has notes."""
    n = schema.notes
    newest = select(n.c.filename, func.max(n.c.id).label("note_id")).group_by(n.c.filename)
    return newest.subquery("newest")


def _bad_names():
    """Select of the names of files whose latest note sets the bad flag."""
    n, newest = schema.notes, _latest_notes()
    return select(n.c.filename).join(newest, n.c.id == newest.c.note_id).where(n.c.bad.is_(True))


def find_raw(engine: Engine, *, target: str | None = None, band: str | None = None,
             date: dt.date | None = None, since: dt.date | None = None,
             until: dt.date | None = None, mode: str | None = None, program: str | None = None,
             obstype: str | Sequence[str] | None = None,
             include_bad: bool = False) -> list[RowMapping]:
    """Raw frames matching every criterion given, in time order.

    ``target`` matches OBJECT ignoring case, spaces, dashes and underscores; ``since`` and
    ``until`` are inclusive UT dates; bad files are left out unless ``include_bad``.
    """
    r = schema.raw
    conditions = []
    if target is not None:
        conditions.append(r.c.object_key == normalise_object(target))
    if band is not None:
        conditions.append(r.c.band == band)
    if date is not None:
        conditions.append(r.c.date_obs == date)
    if since is not None:
        conditions.append(r.c.date_obs >= since)
    if until is not None:
        conditions.append(r.c.date_obs <= until)
    if mode is not None:
        conditions.append(r.c.mode == mode)
    if program is not None:
        conditions.append(r.c.program == program)
    if obstype is not None:
        types = [obstype] if isinstance(obstype, str) else list(obstype)
        conditions.append(r.c.obstype.in_([t.upper() for t in types]))
    if not include_bad:
        conditions.append(r.c.filename.not_in(_bad_names()))
    query = select(r).where(and_(True, *conditions)).order_by(r.c.mjd_obs, r.c.filename)
    with reading(engine) as conn:
        return list(conn.execute(query).mappings())


_NOTES_OF = (select(schema.notes.c.filename, schema.notes.c.id, schema.notes.c.bad)
             .where(schema.notes.c.filename.in_(bindparam("names", expanding=True))))


def bad_files(engine: Engine, names: Iterable[str]) -> set[str]:
    """Which of ``names`` (paths or frame names) are marked bad; returned as given."""
    with reading(engine) as conn:
        return bad_files_in(conn, names)


def bad_files_in(conn: Connection, names: Iterable[str]) -> set[str]:
    """:func:`bad_files` on an open connection (a backend checks inside its journal write).

    One indexed lookup of the notes of just these files; the latest note of each decides.
    """
    given = {canonical_name(name): name for name in names}
    keys = list(given)
    latest: dict[str, tuple[int, bool]] = {}
    for i in range(0, len(keys), _CHUNK):
        for filename, note_id, bad in conn.execute(_NOTES_OF, {"names": keys[i:i + _CHUNK]}):
            if filename not in latest or note_id > latest[filename][0]:
                latest[filename] = (note_id, bool(bad))
    return {given[name] for name, (_, bad) in latest.items() if bad}


def is_bad(engine: Engine, name: str) -> bool:
    """Whether the latest note on ``name`` (a path or frame name) marks it bad."""
    return bool(bad_files(engine, [name]))


def add_note(engine: Engine, name: str, text: str, *, bad: bool | None = None,
             user: str | None = None) -> bool:
    """Append a note to a file's history and return the file's bad flag after it.

    ``bad=None`` keeps the current flag (a plain comment).
    """
    filename = canonical_name(name)
    if bad is None:
        bad = is_bad(engine, filename)
    row = dict(filename=filename, text=text, bad=bad, user=user or _default_user(),
               created_at=utcnow())
    write(engine, lambda conn: conn.execute(schema.notes.insert().values(**row)))
    return bad


def notes_of(engine: Engine, name: str) -> list[RowMapping]:
    """A file's notes, oldest first."""
    n = schema.notes
    query = select(n).where(n.c.filename == canonical_name(name)).order_by(n.c.id)
    with reading(engine) as conn:
        return list(conn.execute(query).mappings())


def raw_by_name(engine: Engine, name: str) -> RowMapping | None:
    """The ``raw`` row of a frame given by path or name."""
    query = select(schema.raw).where(schema.raw.c.filename == canonical_name(name))
    with reading(engine) as conn:
        return conn.execute(query).mappings().first()


def products_of_raw(engine: Engine, name: str) -> list[RowMapping]:
    """Every product made from the raw frame ``name`` (path or frame name)."""
    r, link, red = schema.raw, schema.raw2reduced, schema.reduced
    query = (select(red).join(link, link.c.reduced_id == red.c.id)
             .join(r, r.c.id == link.c.raw_id)
             .where(r.c.filename == canonical_name(name)).order_by(red.c.id))
    with reading(engine) as conn:
        return list(conn.execute(query).mappings())


def inputs_of_product(engine: Engine, product_path: str) -> list[RowMapping]:
    """The raw frames a product was made from, in time order."""
    r, link, red = schema.raw, schema.raw2reduced, schema.reduced
    query = (select(r).join(link, link.c.raw_id == r.c.id)
             .join(red, red.c.id == link.c.reduced_id)
             .where(red.c.path_key == path_key(product_path)).order_by(r.c.mjd_obs))
    with reading(engine) as conn:
        return list(conn.execute(query).mappings())


def close_matches(engine: Engine, column: str, value: str, *, n: int = 5,
                  kind: str | None = None) -> list[str]:
    """Distinct values of ``raw.<column>`` that look like ``value`` (for "did you mean"); with
    ``kind``, of ``reduced.<column>`` among the products of that kind."""
    table = schema.raw if kind is None else schema.reduced
    query = select(table.c[column]).distinct()
    if kind is not None:
        query = query.where(table.c.kind == kind)
    with reading(engine) as conn:
        values = [v for v in conn.execute(query).scalars() if v]
    if column == "object":
        by_key = {normalise_object(v): v for v in values}
        keys = difflib.get_close_matches(normalise_object(value), list(by_key), n=n, cutoff=0.5)
        return [by_key[k] for k in keys]
    return difflib.get_close_matches(value, values, n=n, cutoff=0.5)


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def raw_written_since(engine: Engine, mtime_ns: int) -> list[RowMapping]:
    """Raw frames (bad ones included) whose file was last written at or after ``mtime_ns``, in
    time order: what a restarted realtime scanner replays."""
    r = schema.raw
    query = select(r).where(r.c.mtime_ns >= mtime_ns).order_by(r.c.mjd_obs, r.c.filename)
    with reading(engine) as conn:
        return list(conn.execute(query).mappings())


def job_states(engine: Engine, ids: Iterable[str]) -> dict[str, str]:
    """The journal's state of each of ``ids`` it knows (instructions, recipes, PSF jobs)."""
    keys = list(ids)
    found: dict[str, str] = {}
    with reading(engine) as conn:
        for i in range(0, len(keys), _CHUNK):
            query = select(schema.jobs.c.id, schema.jobs.c.state).where(
                schema.jobs.c.id.in_(keys[i:i + _CHUNK]))
            found.update(dict(conn.execute(query).all()))
    return found


def raw_by_names(engine: Engine, names: Iterable[str]) -> dict[str, RowMapping]:
    """The ``raw`` rows of frames given by path or name, by frame name (unknown ones left out)."""
    keys = sorted({canonical_name(n) for n in names})
    rows: dict[str, RowMapping] = {}
    with reading(engine) as conn:
        for i in range(0, len(keys), _CHUNK):
            query = select(schema.raw).where(schema.raw.c.filename.in_(keys[i:i + _CHUNK]))
            rows.update((r["filename"], r) for r in conn.execute(query).mappings())
    return rows


def latest_product(engine: Engine, kind: str, *, target: str | None = None,
                   date: dt.date | None = None, band: str | None = None,
                   mode: str | None = None) -> RowMapping | None:
    """The newest product of ``kind`` (by observing date, then by when it was made) matching
    what is given; the target matched as :func:`normalise_object` spells it."""
    r = schema.reduced
    query = select(r).where(r.c.kind == kind)
    if target:
        query = query.where(r.c.object_key == normalise_object(target))
    if date:
        query = query.where(r.c.date_obs == date)
    if band:
        query = query.where(func.upper(r.c.band) == band.upper())
    if mode:
        query = query.where(func.lower(r.c.mode) == mode.lower())
    query = query.order_by(r.c.date_obs.desc(), r.c.updated_at.desc(), r.c.id.desc()).limit(1)
    with reading(engine) as conn:
        return conn.execute(query).mappings().first()

