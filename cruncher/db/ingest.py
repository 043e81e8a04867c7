"""Index raw frames: read their headers (never the pixels) into the ``raw`` table.

A file whose size and modification time match its row is not opened again, so re-ingesting a
night is cheap and changes nothing. A changed file updates its row; a moved file (same frame
name, new path) has its path updated. A file that cannot be indexed is reported with its path and
the reason, and the run carries on.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError
from tqdm import tqdm

from cruncher import instruments
from cruncher.db import schema
from cruncher.db.engine import reading, utcnow, write
from cruncher.errors import CruncherError

_log = logging.getLogger(__name__)
_CHUNK = 500


@dataclass
class IngestReport:
    """What an ingest run did to each file."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def seen(self) -> int:
        return len(self.added) + len(self.updated) + self.unchanged + len(self.failed)

    def summary(self) -> str:
        return (f"{self.seen} files in {self.seconds:.1f} s: {len(self.added)} added, "
                f"{len(self.updated)} updated, {self.unchanged} unchanged, "
                f"{len(self.failed)} failed")


@dataclass(frozen=True)
class _Known:
    id: int
    path: str
    size: int
    mtime_ns: int


def find_fits_files(paths: Iterable[str | Path], report: IngestReport,
                    instrument: str = "gpi") -> list[Path]:
    """Files named in ``paths``, directories searched recursively for FITS files, in name order."""
    keywords = instruments.get(instrument).keywords
    found: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.is_file()
                         and keywords.is_fits_name(p) and not p.name.startswith("."))
        elif path.is_file():
            found.append(path)
        else:
            report.failed.append((str(path), "no such file or directory"))
    return [p.absolute() for p in found]


def ingest(engine: Engine, paths: Iterable[str | Path], *, instrument: str = "gpi",
           progress: bool | None = None) -> IngestReport:
    """Index every FITS file under ``paths``.

    Parameters
    ----------
    progress
        Show a progress bar; ``None`` shows one only on a terminal.
    """
    start = time.perf_counter()
    report = IngestReport()
    files = find_fits_files(paths, report, instrument)
    reader = instruments.get(instrument).raw_record
    names = [instruments.get(instrument).keywords.canonical_name(p) for p in files]
    known = _known(engine, names)
    pending: list[dict[str, Any]] = []
    first_seen: dict[str, Path] = {}
    bar = tqdm(zip(files, names), total=len(files), unit="file", desc="ingest",
               disable=None if progress is None else not progress, leave=False)
    for path, name in bar:
        if name in first_seen:
            report.failed.append((str(path), f"same frame name as {first_seen[name]}; skipped"))
            continue
        first_seen[name] = path
        row = _examine(path, name, known.get(name), reader, report)
        if row is not None:
            pending.append(row)
        if len(pending) >= _CHUNK:
            _store(engine, pending, known, report)
            pending = []
    _store(engine, pending, known, report)
    report.seconds = time.perf_counter() - start
    for path, reason in report.failed:
        _log.warning("not ingested: %s", reason, extra={"path": path})
    _log.info("ingest: %s", report.summary())
    return report


def ingest_file(engine: Engine, path: str | Path, *, instrument: str = "gpi") -> int:
    """Index one file and return its ``raw.id``; errors are raised, not collected."""
    path = Path(path).absolute()
    name = instruments.get(instrument).keywords.canonical_name(path)
    known = _known(engine, [name])
    report = IngestReport()
    row = _examine(path, name, known.get(name), instruments.get(instrument).raw_record, report,
                   collect=False)
    if row is not None:
        _store(engine, [row], known, report)
        known = _known(engine, [name])
    return known[name].id


def _examine(path: Path, name: str, previous: _Known | None, reader, report: IngestReport,
             *, collect: bool = True) -> dict[str, Any] | None:
    """The row to write for ``path``, or ``None`` when it is unchanged or unreadable."""
    try:
        stat = path.stat()
        if (previous is not None and previous.size == stat.st_size
                and previous.mtime_ns == stat.st_mtime_ns and previous.path == str(path)):
            report.unchanged += 1
            return None
        row = reader(path)
    except CruncherError as exc:
        if not collect:
            raise
        report.failed.append((str(path), getattr(exc, "reason", str(exc))))
        return None
    except OSError as exc:
        if not collect:
            raise
        report.failed.append((str(path), f"cannot read: {exc.strerror or exc}"))
        return None
    row.update(path=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return row


def _known(engine: Engine, names: Sequence[str]) -> dict[str, _Known]:
    table = schema.raw
    found: dict[str, _Known] = {}
    with reading(engine) as conn:
        for i in range(0, len(names), _CHUNK):
            query = select(table.c.filename, table.c.id, table.c.path, table.c.size,
                           table.c.mtime_ns).where(table.c.filename.in_(names[i:i + _CHUNK]))
            for filename, *rest in conn.execute(query):
                found[filename] = _Known(*rest)
    return found


def _store(engine: Engine, rows: list[dict[str, Any]], known: dict[str, _Known],
           report: IngestReport) -> None:
    """Insert new rows in one batch and update changed ones."""
    if not rows:
        return
    now = utcnow()
    new = [dict(r, ingested_at=now, updated_at=now) for r in rows if r["filename"] not in known]
    changed = [dict(r, updated_at=now) for r in rows if r["filename"] in known]

    def store(conn: Connection) -> None:
        if new:
            conn.execute(schema.raw.insert(), new)
        for row in changed:
            conn.execute(schema.raw.update().where(schema.raw.c.filename == row["filename"]), row)

    try:
        write(engine, store)
    except IntegrityError:
        # Another process indexed some of these frames meanwhile: fall back to one at a time.
        _store_one_by_one(engine, new + changed, report)
        return
    report.added.extend(r["path"] for r in new)
    report.updated.extend(r["path"] for r in changed)


def _store_one_by_one(engine: Engine, rows: list[dict[str, Any]], report: IngestReport) -> None:
    table = schema.raw

    def store(conn: Connection, row: dict[str, Any]) -> bool:
        """Whether the row is new."""
        exists = conn.execute(select(table.c.id).where(table.c.filename == row["filename"]))
        if exists.first() is None:
            conn.execute(table.insert(), [dict(row, ingested_at=row["updated_at"])])
            return True
        conn.execute(table.update().where(table.c.filename == row["filename"]),
                     {k: v for k, v in row.items() if k != "ingested_at"})
        return False

    for row in rows:
        added = write(engine, lambda conn, row=row: store(conn, row))
        (report.added if added else report.updated).append(row["path"])
