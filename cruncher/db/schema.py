"""The database tables (SQLAlchemy Core), portable between SQLite and MariaDB/MySQL.

The Data Cruncher's tables (seed 004, section 2.1.2): ``raw`` (one row per raw file, its header
fields as columns), ``reduced`` (one row per product), ``raw2reduced`` (which raw files went into
which product), ``contrast`` (contrast against separation per product), ``notes`` (the bad-file
log, with history); plus what recovery and calibration need: ``jobs`` (the backend's journal)
and ``calibrations``; and ``detections`` (point sources found in a reduction; schema 2). ``schema_info`` holds the schema version for migrations.
"""
from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, Column, Date, DateTime, Double, ForeignKey, Index,
                        Integer, MetaData, String, Table, Text)
from sqlalchemy.dialects import mysql

#: Bump when a table changes, and add the step to ``cruncher.db.engine.MIGRATIONS``.
SCHEMA_VERSION = 2

metadata = MetaData()

# MySQL's DATETIME drops fractions of a second and TEXT stops at 64 KiB; journals need both.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
PATH = 1024
# Unique indexes on long paths exceed InnoDB's key length; products are keyed by sha1(path).
PATH_KEY = 40

schema_info = Table(
    "schema_info", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)

raw = Table(
    "raw", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("filename", String(128), nullable=False, unique=True),
    Column("path", String(PATH), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("object", String(80), nullable=False),
    Column("object_key", String(80), nullable=False),
    Column("obstype", String(16), nullable=False),
    Column("obsclass", String(32)),
    Column("obsmode", String(32)),
    Column("ifsfilt", String(32)),
    Column("band", String(4), nullable=False),
    Column("dispersr", String(32)),
    Column("mode", String(8), nullable=False),
    Column("occulter", String(32)),
    Column("apodizer", String(32)),
    Column("lyotmask", String(32)),
    Column("itime", Double, nullable=False),
    Column("coadds", Integer, nullable=False),
    Column("date_obs", Date, nullable=False),
    Column("utstart", String(16)),
    Column("mjd_obs", Double, nullable=False),
    Column("datalab", String(64)),
    Column("obsid", String(64)),
    Column("program", String(64)),
    Column("wpangle", Double),
    Column("gcallamp", String(16)),
    Column("ra_deg", Double),
    Column("dec_deg", Double),
    Column("ha", String(16)),
    Column("par_ang", Double),
    Column("airmass", Double),
    Column("ingested_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Index("ix_raw_target", "object_key", "band", "mode", "date_obs"),
    Index("ix_raw_mjd", "mjd_obs"),
    Index("ix_raw_program", "program"),
)

reduced = Table(
    "reduced", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", String(PATH), nullable=False),
    Column("path_key", String(PATH_KEY), nullable=False, unique=True),
    Column("filename", String(255), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("grade", String(16), nullable=False, default="science"),
    Column("object", String(80)),
    Column("object_key", String(80)),
    Column("band", String(4)),
    Column("mode", String(8)),
    Column("date_obs", Date),
    Column("n_inputs", Integer, nullable=False, default=0),
    Column("contrast_025", Double),
    Column("contrast_040", Double),
    Column("contrast_080", Double),
    Column("satspot_flux", Double),
    Column("software", String(255)),
    Column("params", LongText),
    Column("job_id", String(64)),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Index("ix_reduced_target", "object_key", "band", "mode", "date_obs"),
    Index("ix_reduced_kind", "kind"),
)

raw2reduced = Table(
    "raw2reduced", metadata,
    Column("raw_id", Integer, ForeignKey("raw.id", ondelete="CASCADE"), primary_key=True),
    Column("reduced_id", Integer, ForeignKey("reduced.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_raw2reduced_reduced", "reduced_id"),
)

contrast = Table(
    "contrast", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reduced_id", Integer, ForeignKey("reduced.id", ondelete="CASCADE"), nullable=False),
    Column("planet_type", String(16), nullable=False),
    Column("calibrated", Boolean, nullable=False, default=False),
    Column("separation_arcsec", Double, nullable=False),
    Column("separation_px", Double),
    Column("contrast", Double),
    Index("ix_contrast_reduced", "reduced_id", "planet_type"),
)

detections = Table(
    "detections", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reduced_id", Integer, ForeignKey("reduced.id", ondelete="CASCADE"), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("x", Double, nullable=False),
    Column("y", Double, nullable=False),
    Column("separation_arcsec", Double, nullable=False),
    Column("pa_deg", Double, nullable=False),
    Column("snr", Double, nullable=False),
    Column("kl", Integer),
    Index("ix_detections_reduced", "reduced_id"),
)

notes = Table(
    "notes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # By name, not by raw.id: the bad-file log may name a frame before it is ingested.
    Column("filename", String(128), nullable=False),
    Column("text", Text, nullable=False),
    Column("bad", Boolean, nullable=False),
    Column("user", String(64), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_notes_filename", "filename", "created_at"),
)

jobs = Table(
    "jobs", metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("parent_id", String(64)),
    Column("key", String(255)),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("tries", Integer, nullable=False, default=0),
    Column("payload", LongText, nullable=False),
    Column("result", LongText),
    Column("error", Text),
    Column("host", String(64)),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("started_at", Timestamp),
    Column("finished_at", Timestamp),
    Index("ix_jobs_state", "state", "kind"),
    Index("ix_jobs_parent", "parent_id"),
    Index("ix_jobs_key", "key"),
)

calibrations = Table(
    "calibrations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", String(PATH), nullable=False),
    Column("path_key", String(PATH_KEY), nullable=False, unique=True),
    Column("filename", String(255), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("band", String(4)),
    Column("itime", Double),
    Column("mjd", Double),
    Column("date_obs", Date),
    Column("valid", Boolean, nullable=False, default=True),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_calibrations_kind", "kind", "band", "mjd"),
)

TABLES = ("raw", "reduced", "raw2reduced", "contrast", "detections", "notes", "jobs",
          "calibrations")
