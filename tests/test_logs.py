"""Log output: readable on a terminal, one parseable line per record in files."""
from __future__ import annotations

import io
import json
import logging

from cruncher.logs import setup_logging


def test_file_lines_carry_extras_as_key_value(tmp_path):
    terminal = io.StringIO()
    logfile = tmp_path / "logs" / "cruncher.log"
    setup_logging("INFO", logfile=logfile, stream=terminal)
    log = logging.getLogger("cruncher.test")
    log.info("ingested %d files", 3, extra={"path": "/data/raw/a b.fits", "job": "j1"})
    log.debug("hidden")
    line = logfile.read_text().strip()
    assert line.startswith("ts=") and "level=INFO" in line and "logger=cruncher.test" in line
    assert 'msg="ingested 3 files"' in line and 'path="/data/raw/a b.fits"' in line
    assert "job=j1" in line and "hidden" not in logfile.read_text()
    assert "ingested 3 files" in terminal.getvalue() and "job=j1" in terminal.getvalue()


def test_json_lines_and_no_duplicate_handlers(tmp_path):
    logfile = tmp_path / "c.log"
    for _ in range(3):
        setup_logging("DEBUG", logfile=logfile, json_lines=True, stream=io.StringIO())
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("cruncher.x").exception("failed", extra={"reason": "boom"})
    lines = logfile.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "ERROR" and record["reason"] == "boom" and "ValueError" in record["exc"]
    setup_logging("INFO", stream=io.StringIO())
