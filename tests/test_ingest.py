"""Indexing raw frames: headers only, idempotent, bad files reported and skipped."""
from __future__ import annotations

import gzip
import os
import shutil
import time

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import func, select

from cruncher.db import schema
from cruncher.db.ingest import ingest, ingest_file
from cruncher.db.queries import raw_by_name
from cruncher.errors import BadInputError, FileNotReadyError

pytestmark = pytest.mark.usefixtures("engine")


def count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.raw)).scalar()


def age(path, seconds=3600):
    """Make a file look old (not still being written)."""
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_ingest_records_header_columns(engine, night):
    report = ingest(engine, [night], progress=False)
    assert len(report.added) == 12 and not report.failed and report.unchanged == 0
    row = raw_by_name(engine, "S20131118S0004.fits")
    assert row["object"] == "HD 95086" and row["object_key"] == "hd95086"
    assert (row["obstype"], row["band"], row["mode"]) == ("OBJECT", "H", "spec")
    assert row["ifsfilt"] == "IFSFILT_H_G1213" and row["dispersr"] == "DISP_PRISM_G6262"
    assert row["itime"] == pytest.approx(59.6468) and row["coadds"] == 1
    assert str(row["date_obs"]) == "2013-11-18" and row["utstart"].startswith("04:04:00")
    assert row["mjd_obs"] == pytest.approx(56614.169444, abs=1e-5)
    assert row["datalab"] == "GS-2013B-Q-1-1-004" and row["program"] == "GS-2013B-Q-1"
    assert row["obsid"] == "GS-2013B-Q-1-1"
    assert row["gcallamp"] == "None" and row["wpangle"] is None
    assert row["path"] == str(night / "131118" / "S20131118S0004.fits")
    arc = raw_by_name(engine, "S20131118S0003.fits")
    assert arc["obstype"] == "ARC" and arc["gcallamp"] == "Ar"
    assert raw_by_name(engine, "S20131118S0012.fits")["band"] == "J"


def test_reingest_changes_nothing_and_skips_reading(engine, night, monkeypatch):
    ingest(engine, [night], progress=False)
    with engine.connect() as conn:
        before = [tuple(r) for r in conn.execute(select(schema.raw).order_by(schema.raw.c.id))]

    def must_not_read(path):
        raise AssertionError(f"re-read {path}")

    monkeypatch.setattr("cruncher.instruments.gpi.rawfile.raw_record", must_not_read)
    report = ingest(engine, [night], progress=False)
    assert report.unchanged == 12 and not report.added and not report.updated
    with engine.connect() as conn:
        after = [tuple(r) for r in conn.execute(select(schema.raw).order_by(schema.raw.c.id))]
    assert after == before


def test_changed_file_updates_its_row_and_moved_file_its_path(engine, night, write_frame, tmp_path):
    ingest(engine, [night], progress=False)
    write_frame(5, object="HD 95086 B", band="H")  # rewritten with a new OBJECT
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(night / "131118" / "S20131118S0006.fits", moved / "S20131118S0006.fits")
    report = ingest(engine, [night, moved], progress=False)
    assert sorted(os.path.basename(p) for p in report.updated) == ["S20131118S0005.fits",
                                                                    "S20131118S0006.fits"]
    assert raw_by_name(engine, "S20131118S0005.fits")["object"] == "HD 95086 B"
    assert raw_by_name(engine, "S20131118S0006.fits")["path"] == str(moved / "S20131118S0006.fits")
    assert count(engine) == 12


def test_bad_files_are_reported_and_the_rest_ingested(engine, night, write_frame, tmp_path):
    d = night / "131118"
    junk = d / "S20131118S0090.fits"
    junk.write_bytes(b"this is not FITS" * 300)
    truncated = write_frame(91, data=np.zeros((64, 64), np.float32))
    truncated.write_bytes(truncated.read_bytes()[:-5000])
    missing = write_frame(92)
    with fits.open(missing, mode="update") as hdul:
        del hdul[0].header["OBSTYPE"]
        del hdul[1].header["ITIME"]
    wrong_filter = write_frame(93)
    fits.setval(wrong_filter, "IFSFILT", value="IFSFILT_Q_G9999")
    for path in (junk, truncated, missing, wrong_filter):
        age(path)
    report = ingest(engine, [night, tmp_path / "nowhere"], progress=False)
    reasons = dict(report.failed)
    assert len(report.added) == 12 and count(engine) == 12
    assert "not a readable FITS file" in reasons[str(junk)]
    assert "truncated" in reasons[str(truncated)]
    assert "missing keywords OBSTYPE, ITIME" == reasons[str(missing)]
    assert "unknown IFSFILT" in reasons[str(wrong_filter)]
    assert "no such file" in reasons[str(tmp_path / "nowhere")]


def test_a_file_still_being_written_is_not_ready(engine, write_frame):
    path = write_frame(1, data=np.zeros((64, 64), np.float32))
    path.write_bytes(path.read_bytes()[:-4000])  # just written: mtime is now
    with pytest.raises(FileNotReadyError, match="still being written"):
        ingest_file(engine, path)
    report = ingest(engine, [path], progress=False)
    assert "still being written" in report.failed[0][1]


def test_ingest_file_returns_the_row_id(engine, write_frame):
    path = write_frame(7)
    rid = ingest_file(engine, path)
    assert rid == raw_by_name(engine, path.name)["id"]
    assert ingest_file(engine, path) == rid
    junk = path.with_name("S20131118S0099.fits")
    junk.write_text("nope" * 1000)
    age(junk)
    with pytest.raises(BadInputError):
        ingest_file(engine, junk)


def test_compressed_frames_are_indexed_under_their_plain_name(engine, write_frame, tmp_path):
    path = write_frame(8)
    gz = tmp_path / "gz" / (path.name + ".gz")
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(path.read_bytes()))
    report = ingest(engine, [gz.parent], progress=False)
    assert len(report.added) == 1
    assert raw_by_name(engine, "S20131118S0008.fits")["path"] == str(gz)


def test_the_same_frame_twice_in_one_run_is_ingested_once(engine, write_frame, tmp_path):
    path = write_frame(9)
    copy = tmp_path / "copy" / path.name
    copy.parent.mkdir()
    shutil.copy(path, copy)
    report = ingest(engine, [path.parent, copy.parent], progress=False)
    assert len(report.added) == 1 and "same frame name" in report.failed[0][1]
