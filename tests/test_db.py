"""Schema, notes, queries and products: the same tests on SQLite and on a real MariaDB server."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import inspect, select

from cruncher.db import engine as dbengine
from cruncher.db import queries, schema
from cruncher.db.ingest import ingest
from cruncher.db.products import record_contrast, record_product
from cruncher.errors import ConfigError


def test_init_is_idempotent_and_versioned(db_url):
    eng = dbengine.make_engine(db_url)
    assert dbengine.schema_version(eng) is None
    with pytest.raises(ConfigError, match="cruncher db init"):
        dbengine.require_schema(eng)
    assert dbengine.init_db(eng) == schema.SCHEMA_VERSION
    assert dbengine.init_db(eng) == schema.SCHEMA_VERSION
    dbengine.require_schema(eng)
    names = set(inspect(eng).get_table_names())
    assert set(schema.TABLES) | {"schema_info"} <= names
    with dbengine.writing(eng) as conn:
        conn.execute(schema.schema_info.update().values(value=str(schema.SCHEMA_VERSION + 1)))
    with pytest.raises(ConfigError, match="newer than this cruncher"):
        dbengine.init_db(eng)
    eng.dispose()


def test_migrations_run_in_order(db_url, monkeypatch):
    eng = dbengine.make_engine(db_url)
    dbengine.init_db(eng)
    with dbengine.writing(eng) as conn:
        conn.execute(schema.schema_info.update().values(value="0"))
    ran = []
    monkeypatch.setitem(dbengine.MIGRATIONS, 0, lambda conn: ran.append(0))
    assert dbengine.init_db(eng) == schema.SCHEMA_VERSION and ran == [0]
    eng.dispose()


def test_a_schema_1_database_is_migrated_to_2(db_url):
    """A database written before detections existed gains the table, its data untouched."""
    eng = dbengine.make_engine(db_url)
    dbengine.init_db(eng)
    queries.add_note(eng, "S20131118S0001.fits", "kept", bad=True, user="t")
    with dbengine.writing(eng) as conn:
        schema.detections.drop(conn)
        conn.execute(schema.schema_info.update().values(value="1"))
    assert "detections" not in inspect(eng).get_table_names()
    assert dbengine.init_db(eng) == 2
    assert "detections" in inspect(eng).get_table_names()
    assert dbengine.schema_version(eng) == 2 and queries.is_bad(eng, "S20131118S0001.fits")
    eng.dispose()


def test_bad_flag_is_the_latest_note(engine, night):
    ingest(engine, [night], progress=False)
    name = "S20131118S0005.fits"
    assert not queries.is_bad(engine, name)
    assert queries.add_note(engine, name, "AO loop open", bad=True, user="obs") is True
    assert queries.is_bad(engine, f"/any/dir/{name}")
    assert queries.add_note(engine, name, "a plain comment") is True  # keeps the flag
    assert queries.add_note(engine, name, "fine after all", bad=False, user="jw") is False
    assert not queries.is_bad(engine, name)
    queries.add_note(engine, name, "no, really bad", bad=True)
    history = queries.notes_of(engine, name)
    assert [n["bad"] for n in history] == [True, True, False, True]
    assert [n["text"] for n in history][0] == "AO loop open" and history[0]["user"] == "obs"
    assert queries.bad_files(engine, [name, "S20131118S0006.fits"]) == {name}


def test_a_note_may_come_before_the_frame(engine, night):
    queries.add_note(engine, "S20131118S0004.fits", "bad seeing", bad=True, user="summit")
    ingest(engine, [night], progress=False)
    names = [r["filename"] for r in queries.find_raw(engine, target="HD 95086", obstype="OBJECT")]
    assert "S20131118S0004.fits" not in names and len(names) == 5


def test_find_raw_filters(engine, night, write_frame):
    write_frame(40, object="HD 95086", band="H", start=dt.datetime(2014, 3, 2, 3, 0),
                program="GS-2014A-LP-1")
    write_frame(41, object="HD 95086", band="H", mode="pol", wpangle=22.5,
                start=dt.datetime(2014, 3, 2, 4, 0))
    ingest(engine, [night], progress=False)

    def names(**kw):
        return [r["filename"] for r in queries.find_raw(engine, **kw)]

    assert len(names(target="hd_95086", obstype="OBJECT")) == 8
    assert names(target="HD95086", obstype="ARC") == ["S20131118S0003.fits"]
    assert len(names(target="HD 95086", band="H", mode="spec", obstype="OBJECT")) == 7
    assert names(target="HD 95086", mode="pol") == ["S20140302S0041.fits"]
    assert len(names(target="HR 2562", band="J")) == 3
    assert names(program="GS-2014A-LP-1") == ["S20140302S0040.fits"]
    assert len(names(since=dt.date(2014, 1, 1))) == 2
    assert len(names(until=dt.date(2013, 12, 31))) == 12
    assert len(names(date=dt.date(2013, 11, 18), obstype=["DARK", "ARC"])) == 3
    everything = names()
    assert everything == sorted(everything, key=lambda n: (n[1:9], n))  # time order
    queries.add_note(engine, "S20131118S0004.fits", "bad", bad=True)
    assert "S20131118S0004.fits" not in names(target="HD 95086")
    assert "S20131118S0004.fits" in names(target="HD 95086", include_bad=True)
    assert queries.close_matches(engine, "object", "HD 9508") == ["HD 95086"]
    assert queries.close_matches(engine, "object", "zzzzzz") == []


def test_products_link_raw_frames_both_ways(engine, night, tmp_path):
    ingest(engine, [night], progress=False)
    raws = [r["path"] for r in queries.find_raw(engine, target="HD 95086", obstype="OBJECT")]
    cube = tmp_path / "reduced" / "S20131118S0004_spdc.fits"
    klip = tmp_path / "reduced" / ("pyklip-S20131118-H-k300a9s4m1-KLmodes-all.fits")
    cube_id = record_product(engine, path=cube, kind="spdc", inputs=raws[:1], target="HD 95086",
                             band="H", mode="spec", date_obs=dt.date(2013, 11, 18))
    klip_id = record_product(engine, path=klip, kind="klip_general", inputs=raws,
                             params={"annuli": 9}, fiducial={"contrast_040": 2.5e-6})
    assert [p["kind"] for p in queries.products_of_raw(engine, raws[0])] == ["spdc",
                                                                             "klip_general"]
    assert [p["kind"] for p in queries.products_of_raw(engine, raws[1])] == ["klip_general"]
    assert [r["path"] for r in queries.inputs_of_product(engine, str(klip))] == raws
    # Recording again replaces the row and its links, keeping the id.
    assert record_product(engine, path=klip, kind="klip_general", inputs=raws[:2]) == klip_id
    assert len(queries.inputs_of_product(engine, str(klip))) == 2
    assert cube_id != klip_id
    record_contrast(engine, klip_id, "L", [0.25, 0.4, 0.8], [1e-5, 3e-6, float("nan")],
                    calibrated=True, pixel_scale=0.014161)
    record_contrast(engine, klip_id, "L", [0.25, 0.4], [2e-5, 4e-6], calibrated=True)
    with engine.connect() as conn:
        rows = conn.execute(select(schema.contrast).order_by(schema.contrast.c.id)).mappings().all()
    assert [(r["separation_arcsec"], r["contrast"]) for r in rows] == [(0.25, 2e-5), (0.4, 4e-6)]


def _in_threads(work, arguments) -> list[Exception]:
    """``work(*args)`` in a thread for each of ``arguments``, all at once; what they raised."""
    errors = []

    def guarded(*args) -> None:
        try:
            work(*args)
        except Exception as exc:  # collected: a thread's exception must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=args) for args in arguments]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_writers_lose_nothing(engine):
    def writer(k: int) -> None:
        for i in range(15):
            queries.add_note(engine, f"S20131118S{k:02d}{i:02d}.fits", "x", bad=i % 2 == 0,
                             user=f"t{k}")

    assert not _in_threads(writer, [(k,) for k in range(6)])
    with engine.connect() as conn:
        assert len(conn.execute(select(schema.notes.c.id)).all()) == 90


def test_concurrent_product_recording_loses_nothing(engine, night, tmp_path):
    """PSF workers and the DRP record products at once; each keeps every link to its raw frames.

    On MariaDB this once deadlocked about one insert in two (InnoDB gap locks) and the error
    escaped as an internal error, failing a PSF-subtraction job that had succeeded.
    """
    ingest(engine, [night], progress=False)
    raws = [r["path"] for r in queries.find_raw(engine, obstype="OBJECT")]

    def recorder(k: int) -> None:
        for i in range(20):
            inputs = raws[(k + i) % len(raws):][:4]
            record_product(engine, path=tmp_path / f"p{k}_{i}.fits", kind="test", inputs=inputs)

    errors = _in_threads(recorder, [(k,) for k in range(4)])
    assert not errors, errors[:3]
    for k in range(4):
        for i in range(20):
            expected = raws[(k + i) % len(raws):][:4]
            linked = queries.inputs_of_product(engine, str(tmp_path / f"p{k}_{i}.fits"))
            assert [r["path"] for r in linked] == expected


@pytest.mark.mariadb
def test_a_transaction_rolled_back_by_a_deadlock_is_run_again(mariadb_server):
    """Two writers lock two rows in opposite orders: InnoDB rolls one back; ``write`` reruns it."""
    from cruncher.testing import mariadb

    with mariadb.scratch_database(mariadb_server) as url:
        eng = dbengine.make_engine(url)
        dbengine.init_db(eng)
        for number in (1, 2):
            queries.add_note(eng, f"S20131118S000{number}.fits", "x", user="t")
        both_hold_one = threading.Barrier(2, timeout=20)
        attempts = {1: 0, 2: 0}

        def lock_both(first: int, second: int) -> None:
            notes = schema.notes

            def work(conn) -> None:
                attempts[first] += 1
                conn.execute(notes.update().where(notes.c.id == first).values(text=str(first)))
                if attempts[first] == 1:
                    both_hold_one.wait()
                conn.execute(notes.update().where(notes.c.id == second).values(text=str(first)))

            dbengine.write(eng, work)

        errors = _in_threads(lock_both, [(1, 2), (2, 1)])
        eng.dispose()
    assert not errors, errors
    assert sorted(attempts.values()) == [1, 2], "one writer was the deadlock's victim and reran"
