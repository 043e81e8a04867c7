"""Connecting to the database, creating and migrating its schema, and writing safely.

SQLite (the embedded default) is opened in WAL mode with a busy timeout, and write transactions
start with ``BEGIN IMMEDIATE`` so that concurrent writers (scanner, backend threads, ingest) wait
for each other instead of failing with "database is locked" halfway through. MariaDB/MySQL is
reached through ``mysql+mysqlconnector://`` with pre-ping and recycling for long-lived services.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from cruncher.db import schema
from cruncher.errors import ConfigError, DatabaseUnavailableError, WriteConflictError

_log = logging.getLogger(__name__)
_WRITE = "cruncher_write"
SQLITE_BUSY_TIMEOUT_S = 60
#: MariaDB/MySQL errors after which the same transaction, run again, can succeed: 1213 (InnoDB
#: rolled it back to break a deadlock) and 1205 (a lock wait timed out).
CONFLICT_ERRNOS = frozenset({1213, 1205})
#: How many times :func:`write` runs a transaction that keeps losing conflicts.
WRITE_ATTEMPTS = 8
T = TypeVar("T")


def _add_detections(conn: Connection) -> None:
    """Schema 1 -> 2: the ``detections`` table."""
    schema.detections.create(conn, checkfirst=True)


#: Migration steps: ``MIGRATIONS[n]`` upgrades a database from schema version n to n + 1.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _add_detections}


def utcnow() -> dt.datetime:
    """Now in UTC, without tzinfo (how both SQLite and MySQL DATETIME store it)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url``; the SQLite file's directory is created when missing."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"database.url is not a valid database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo)
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        return create_engine(parsed.set(query=query), echo=echo, pool_pre_ping=True,
                             pool_recycle=3600, future=True)
    return create_engine(parsed, echo=echo, pool_pre_ping=True)


def _sqlite_engine(url, echo: bool) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL",
                       f"busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextlib.contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A connection inside a write transaction, committed on success, rolled back on error.

    On SQLite the write lock is taken at the start, so a transaction never fails half-way
    because another writer got there first.
    """
    try:
        with engine.execution_options(**{_WRITE: True}).begin() as conn:
            yield conn
    except DBAPIError as exc:
        if getattr(exc.orig, "errno", None) in CONFLICT_ERRNOS:
            raise WriteConflictError(f"database write rolled back: {exc.orig}") from exc
        if isinstance(exc, OperationalError):
            raise DatabaseUnavailableError(f"database write failed: {exc.orig}") from exc
        raise


def write(engine: Engine, work: Callable[[Connection], T], *,
          attempts: int = WRITE_ATTEMPTS) -> T:
    """``work(conn)`` in a write transaction of its own, run again if it loses a conflict.

    Concurrent writers on InnoDB (PSF workers recording products while the DRP records cubes)
    can deadlock on the gap locks of the same index; the server then rolls one transaction back
    and asks for it to be restarted. ``work`` must therefore do nothing outside ``conn``.

    Raises
    ------
    WriteConflictError
        The transaction lost ``attempts`` conflicts in a row (retryable).
    """
    for attempt in range(1, attempts):
        try:
            with writing(engine) as conn:
                return work(conn)
        except WriteConflictError as exc:
            # Random, growing pauses, so that the writers that collided do not collide again.
            delay = random.uniform(0.005, 0.02) * 2 ** attempt
            _log.debug("write conflict (%s); try %d of %d in %.0f ms", exc, attempt + 1,
                       attempts, delay * 1000)
            time.sleep(delay)
    with writing(engine) as conn:
        return work(conn)


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads; connection failures become :class:`DatabaseUnavailableError`."""
    try:
        with engine.connect() as conn:
            yield conn
    except OperationalError as exc:
        raise DatabaseUnavailableError(f"database unreachable: {exc.orig}") from exc


def ensure_database(url: str) -> None:
    """On MariaDB/MySQL, create the database named in ``url`` if the server lacks it."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("mysql", "mariadb") or not parsed.database:
        return
    server = create_engine(parsed.set(database=""), pool_pre_ping=True)
    try:
        with server.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{parsed.database}` "
                                 "CHARACTER SET utf8mb4")
    except OperationalError as exc:
        raise DatabaseUnavailableError(f"cannot reach {parsed.render_as_string()}: "
                                       f"{exc.orig}") from exc
    finally:
        server.dispose()


def schema_version(engine: Engine) -> int | None:
    """The schema version recorded in the database, or ``None`` for an empty database."""
    with reading(engine) as conn:
        if not inspect(conn).has_table("schema_info"):
            return None
        value = conn.execute(select(schema.schema_info.c.value)
                             .where(schema.schema_info.c.name == "schema_version")).scalar()
    return int(value) if value is not None else None


def init_db(engine: Engine) -> int:
    """Create missing tables and migrate an older schema; safe to run any number of times.

    Returns
    -------
    int
        The schema version the database is now at.

    Raises
    ------
    ConfigError
        The database was written by a newer cruncher (its schema version is higher).
    """
    found = schema_version(engine)
    if found is not None and found > schema.SCHEMA_VERSION:
        raise ConfigError(f"the database has schema version {found}, newer than this cruncher's "
                          f"{schema.SCHEMA_VERSION}: upgrade cruncher")
    try:
        with writing(engine) as conn:
            schema.metadata.create_all(conn, checkfirst=True)
            version = schema.SCHEMA_VERSION if found is None else found
            while version < schema.SCHEMA_VERSION:
                _log.info("migrating database schema %s -> %s", version, version + 1)
                MIGRATIONS[version](conn)
                version += 1
            _record_version(conn, version, new=found is None)
    except SQLAlchemyError as exc:
        raise DatabaseUnavailableError(f"cannot initialise the database: {exc}") from exc
    return version


def _record_version(conn: Connection, version: int, *, new: bool) -> None:
    table = schema.schema_info
    if new:
        conn.execute(table.insert().values(name="schema_version", value=str(version)))
    else:
        conn.execute(table.update().where(table.c.name == "schema_version")
                     .values(value=str(version)))


def require_schema(engine: Engine) -> None:
    """Fail clearly if the database was never initialised or needs a migration."""
    found = schema_version(engine)
    if found is None:
        raise ConfigError(f"database {engine.url.render_as_string(hide_password=True)} has no "
                          "cruncher tables: run `cruncher db init`")
    if found != schema.SCHEMA_VERSION:
        raise ConfigError(f"database schema version {found}, this cruncher needs "
                          f"{schema.SCHEMA_VERSION}: run `cruncher db init` to migrate")


def drop_all(engine: Engine) -> None:
    """Remove every cruncher table (tests and throwaway databases only)."""
    with writing(engine) as conn:
        schema.metadata.drop_all(conn)
