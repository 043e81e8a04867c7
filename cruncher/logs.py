"""One place that sets up logging: readable on a terminal, one line per record in files.

Code logs through ``logging.getLogger(__name__)`` with lazy ``%s`` arguments and puts machine-
readable facts in ``extra={...}`` (``path=``, ``job=``, ``reason=``...). On a terminal they are
appended as ``key=value``; in files every record is one ``key=value`` line (or one JSON object
with ``json=True``), so ``grep path=/data/raw/S20131118S0064.fits`` tells the story of a file.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any, TextIO

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime",
                                                                          "taskName"}
_MARK = "_cruncher_handler"


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


class TerminalFormatter(logging.Formatter):
    """``05:14:03 INFO    cruncher.db.ingest: ingested 40 files  path=...`` for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = record_extras(record)
        if extras:
            text += "  " + " ".join(f"{k}={_quote(v)}" for k, v in extras.items())
        return text


class KeyValueFormatter(logging.Formatter):
    """``ts=2026-11-21T05:14:03.120Z level=INFO logger=... msg="..." path=...``: one record a line."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        return " ".join(f"{k}={_quote(v)}" for k, v in fields.items())

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        out: dict[str, Any] = {"ts": f"{ts}.{int(record.msecs):03d}Z", "level": record.levelname,
                               "logger": record.name, "msg": record.getMessage()}
        out.update(record_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return out


class JsonFormatter(KeyValueFormatter):
    """The same fields as :class:`KeyValueFormatter`, as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), default=str)


def setup_logging(level: str | int = "INFO", *, logfile: str | Path | None = None,
                  json_lines: bool = False, stream: TextIO | None = None) -> None:
    """Configure the root logger; calling it again replaces what an earlier call installed.

    Parameters
    ----------
    level
        Least severe level shown.
    logfile
        Also append records to this file (its directory is created); it is reopened if rotated
        away by logrotate.
    json_lines
        Write the file as JSON lines instead of ``key=value`` lines.
    stream
        Terminal stream (default ``sys.stderr``).
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = []
    terminal = logging.StreamHandler(stream or sys.stderr)
    terminal.setFormatter(TerminalFormatter())
    handlers.append(terminal)
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.handlers.WatchedFileHandler(logfile, encoding="utf-8")
        to_file.setFormatter(JsonFormatter() if json_lines else KeyValueFormatter())
        handlers.append(to_file)
    for handler in handlers:
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    for noisy in ("websockets", "watchdog", "matplotlib", "PIL", "urllib3", "asyncio", "mysql.connector"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
