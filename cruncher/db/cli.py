"""``cruncher db ...``: create the schema, index raw frames, keep the bad-file log, look things up."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cruncher.config import Settings, mask_url

if TYPE_CHECKING:
    from sqlalchemy import Engine

# Handlers import the database modules themselves, so `cruncher --help` stays instant.

DB_EPILOG = """\
examples:
  cruncher db init
  cruncher db ingest /data/raw/131118 /data/raw/131119
  cruncher db mark-bad /data/raw/131118/S20131118S0064.fits --note "AO loop open" --user jw
  cruncher db mark-good S20131118S0064.fits --note "loop was fine after all"
  cruncher db notes S20131118S0064.fits
  cruncher db find --target "HD 95086" --band H --since 2013-11-01 --until 2013-11-30
  cruncher db products S20131118S0064.fits
"""


def register(sub, common) -> None:
    from cruncher.cli import add_command

    parser = sub.add_parser("db", help="the database: init, ingest, bad-file notes, queries",
                            description="The database that indexes raw frames and products.",
                            epilog=DB_EPILOG, parents=[common],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    dbsub = parser.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)

    add_command(dbsub, common, "init", _init, logs_to_file=True,
                help="create the tables, or migrate them (idempotent)")

    p = add_command(dbsub, common, "ingest", _ingest, logs_to_file=True,
                    help="index raw FITS frames by their headers (directories are searched)",
                    epilog="Unchanged files are skipped; unreadable ones are listed with the "
                           "reason. Exit status 1 if any file could not be indexed.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on a terminal)")

    p = add_command(dbsub, common, "ingest-products", _ingest_products, logs_to_file=True,
                    help="record the products of a super_cruncher campaign (with raw links)",
                    epilog="Reads the manifests (products.jsonl) the ranks wrote under DIR and "
                           "records every product still on disk, linked to its raw frames. "
                           "Running it again changes nothing. Exit status 1 if any entry could "
                           "not be recorded.")
    p.add_argument("directory", type=Path, metavar="DIR", help="the campaign's data root")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                   help="products were moved: replace this path prefix (repeatable)")

    for name, bad, needs_note in (("mark-bad", True, True), ("mark-good", False, False)):
        p = add_command(dbsub, common, name, _mark, logs_to_file=True,
                        help=f"mark raw frames {'bad' if bad else 'good'} (the history is kept)")
        p.add_argument("files", nargs="+", metavar="FILE", help="raw frame paths or names")
        p.add_argument("--note", required=needs_note, default="marked good",
                       help="why" + ("" if needs_note else " (default: 'marked good')"))
        p.add_argument("--user", help="who (default: the login name)")
        p.set_defaults(bad=bad)

    p = add_command(dbsub, common, "notes", _notes, help="the note history of a raw frame")
    p.add_argument("file", metavar="FILE")

    p = add_command(dbsub, common, "find", _find, help="raw frames matching criteria, time order")
    p.add_argument("--target", help="OBJECT, ignoring case and spaces")
    p.add_argument("--band", choices=("Y", "J", "H", "K1", "K2"))
    p.add_argument("--date", type=_date, help="UT date, YYYY-MM-DD or YYYYMMDD")
    p.add_argument("--since", type=_date, help="first UT date (inclusive)")
    p.add_argument("--until", type=_date, help="last UT date (inclusive)")
    p.add_argument("--mode", choices=("spec", "pol"))
    p.add_argument("--program", help="program id, e.g. GS-2015B-LP-6")
    p.add_argument("--obstype", help="OBJECT, DARK, ARC, FLAT (comma-separated)")
    p.add_argument("--include-bad", action="store_true", help="also frames marked bad")
    p.add_argument("--format", choices=("table", "paths", "json"), default="table")

    p = add_command(dbsub, common, "products", _products, help="products made from a raw frame")
    p.add_argument("file", metavar="FILE")
    p = add_command(dbsub, common, "inputs", _inputs, help="raw frames a product was made from")
    p.add_argument("product", metavar="PRODUCT")


def _date(text: str) -> dt.date:
    text = text.strip()
    try:
        if len(text) == 8 and text.isdigit():
            return dt.datetime.strptime(text, "%Y%m%d").date()
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (YYYY-MM-DD or YYYYMMDD)") from None


def open_database(settings: Settings, *, create: bool = False) -> Engine:
    """An engine for the configured database, its schema created (``create``) or checked."""
    from cruncher.db import engine as dbengine

    engine = dbengine.make_engine(settings.database.url)
    if create:
        dbengine.ensure_database(settings.database.url)
        dbengine.init_db(engine)
    else:
        dbengine.require_schema(engine)
    return engine


def _init(args, settings: Settings) -> int:
    from cruncher.db import engine as dbengine

    dbengine.ensure_database(settings.database.url)
    engine = dbengine.make_engine(settings.database.url)
    before = dbengine.schema_version(engine)
    after = dbengine.init_db(engine)
    what = ("created" if before is None else "already up to date" if before == after
            else f"migrated from version {before}")
    print(f"database {mask_url(settings.database.url)}: schema version {after} ({what})")
    return 0


def _ingest(args, settings: Settings) -> int:
    from cruncher.db.ingest import ingest

    engine = open_database(settings, create=True)
    report = ingest(engine, args.paths, progress=args.progress)
    print(report.summary())
    for path, reason in report.failed:
        print(f"  FAILED {path}: {reason}")
    return 1 if report.failed else 0


def _ingest_products(args, settings: Settings) -> int:
    from cruncher import pathmap
    from cruncher.db.announced import MANIFEST, ingest_manifests

    engine = open_database(settings, create=True)
    report = ingest_manifests(engine, args.directory, prefixes=pathmap.parse(args.map))
    if not report.manifests:
        print(f"no {MANIFEST} under {args.directory}: is it a super_cruncher output root?")
        return 1
    print(f"{report.recorded} product(s) recorded from {report.manifests} manifest(s); "
          f"{len(report.missing)} no longer on disk, {len(report.failed)} failed")
    for path in report.missing[:20]:
        print(f"  missing {path}")
    for where, reason in report.failed:
        print(f"  FAILED {where}: {reason}")
    return 1 if report.failed else 0


def _mark(args, settings: Settings) -> int:
    from cruncher.db import queries

    engine = open_database(settings, create=True)
    for name in args.files:
        if queries.raw_by_name(engine, name) is None:
            print(f"warning: {name} is not in the raw table (yet); the note is kept for it",
                  file=sys.stderr)
        queries.add_note(engine, name, args.note, bad=args.bad, user=args.user)
        print(f"{name}: marked {'bad' if args.bad else 'good'}")
    return 0


def _notes(args, settings: Settings) -> int:
    from cruncher.db import queries

    engine = open_database(settings)
    history = queries.notes_of(engine, args.file)
    if not history:
        print(f"{args.file}: no notes")
    for note in history:
        flag = "BAD " if note["bad"] else "good"
        print(f"{note['created_at']:%Y-%m-%d %H:%M:%S} UTC {flag} {note['user']}: {note['text']}")
    return 0


def _find(args, settings: Settings) -> int:
    from cruncher.db import queries

    engine = open_database(settings)
    obstype = args.obstype.split(",") if args.obstype else None
    rows = queries.find_raw(engine, target=args.target, band=args.band, date=args.date,
                            since=args.since, until=args.until, mode=args.mode,
                            program=args.program, obstype=obstype, include_bad=args.include_bad)
    if not rows and args.target:
        hints = queries.close_matches(engine, "object", args.target)
        if hints:
            print(f"no frames of {args.target!r}; did you mean: {', '.join(hints)}?",
                  file=sys.stderr)
    _print_rows(rows, args.format, ("filename", "object", "obstype", "band", "mode", "itime",
                                    "date_obs", "utstart", "program"))
    return 0


def _products(args, settings: Settings) -> int:
    from cruncher.db import queries

    rows = queries.products_of_raw(open_database(settings), args.file)
    _print_rows(rows, "table", ("kind", "grade", "path"))
    return 0


def _inputs(args, settings: Settings) -> int:
    from cruncher.db import queries

    rows = queries.inputs_of_product(open_database(settings), args.product)
    _print_rows(rows, "table", ("filename", "object", "band", "date_obs", "path"))
    return 0


def _print_rows(rows, fmt: str, columns: tuple[str, ...]) -> None:
    if fmt == "paths":
        for row in rows:
            print(row["path"])
    elif fmt == "json":
        print(json.dumps([dict(r) for r in rows], default=str, indent=1))
    else:
        table = [[str(row[c]) if row[c] is not None else "" for c in columns] for row in rows]
        widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
        for r in table:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
        print(f"({len(rows)} rows)")
