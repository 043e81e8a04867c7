"""The database: schema, connection, ingest of raw frames, products, queries.

SQLite by default (``sqlite:///<data root>/cruncher.db``); MariaDB/MySQL in production through
``mysql+mysqlconnector://``. The same code runs on both.
"""
from cruncher.db.engine import init_db, make_engine, reading, require_schema, write, writing
from cruncher.db.ingest import IngestReport, ingest, ingest_file

__all__ = ["IngestReport", "ingest", "ingest_file", "init_db", "make_engine", "reading",
           "require_schema", "write", "writing"]
