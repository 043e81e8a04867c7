"""Files arriving under a watched tree: reported once each, only when complete."""
from __future__ import annotations

import os
import shutil
import time

import pytest

from cruncher.instructors.arrivals import Arrivals

FITS_BLOCK = b"\0" * 2880


def collect(arrivals: Arrivals, expected: int, timeout: float = 10.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        got += arrivals.get(timeout=0.2)
    got += arrivals.get(timeout=0.5)          # nothing more should come
    return got


@pytest.fixture
def watched(tmp_path):
    arrivals = Arrivals(tmp_path / "raw", settle_s=0.5, rescan_s=1.0, poll_s=0.05).start()
    yield tmp_path / "raw", arrivals
    arrivals.stop()


def test_a_file_written_in_place_is_reported_once_when_closed(watched):
    root, arrivals = watched
    night = root / "160315"
    night.mkdir()
    path = night / "S20160315S0001.fits"
    with open(path, "wb") as out:
        for _ in range(5):
            out.write(FITS_BLOCK)
            out.flush()
            time.sleep(0.2)                  # each write restarts the settle clock
            assert arrivals.get(timeout=0) == []
    assert collect(arrivals, 1) == [str(path)]


def test_copy_then_rename_is_reported_and_the_temporary_name_is_not(watched, tmp_path):
    root, arrivals = watched
    source = tmp_path / "S20160315S0002.fits"
    source.write_bytes(FITS_BLOCK * 3)
    night = root / "160315"
    night.mkdir()
    temporary = night / ".S20160315S0002.fits.a1b2c3"
    shutil.copy(source, temporary)
    os.rename(temporary, night / source.name)
    assert collect(arrivals, 1) == [str(night / source.name)]


def test_files_already_there_and_missed_events_are_found_by_rescans(tmp_path):
    root = tmp_path / "raw"
    (root / "160314").mkdir(parents=True)
    old = root / "160314" / "S20160314S0001.fits"
    old.write_bytes(FITS_BLOCK)
    arrivals = Arrivals(root, settle_s=0.3, rescan_s=0.5, poll_s=0.05).start()
    try:
        assert collect(arrivals, 1) == [str(old)]
        # a file the events cannot report (as if written before its directory was watched)
        arrivals.complete = lambda path: None
        arrivals.touched = lambda path: None
        late = root / "160314" / "S20160314S0002.fits"
        late.write_bytes(FITS_BLOCK)
        assert collect(arrivals, 1) == [str(late)]
    finally:
        arrivals.stop()


def test_a_rewritten_file_is_reported_again_and_other_names_never(watched):
    root, arrivals = watched
    path = root / "S20160315S0003.fits"
    path.write_bytes(FITS_BLOCK)
    assert collect(arrivals, 1) == [str(path)]
    (root / "notes.txt").write_text("not data")
    path.write_bytes(FITS_BLOCK * 2)
    assert collect(arrivals, 1) == [str(path)]


def test_a_thousand_files_at_once_are_all_reported_once(watched):
    root, arrivals = watched
    night = root / "160316"
    night.mkdir()
    names = {str(night / f"S20160316S{i:04d}.fits") for i in range(1, 1001)}
    for name in names:
        with open(name, "wb") as out:
            out.write(FITS_BLOCK)
    got = collect(arrivals, len(names), timeout=30)
    assert sorted(got) == sorted(names)


def test_files_are_passed_on_in_the_order_they_were_first_seen(tmp_path):
    root = tmp_path / "raw"
    arrivals = Arrivals(root, settle_s=0.5, rescan_s=30, poll_s=0.05, max_hold_s=1.5).start()
    try:
        slow, quick, stuck = (root / f"S20160315S000{i}.fits" for i in (1, 2, 3))
        with open(slow, "wb") as out:            # still being written ...
            out.write(FITS_BLOCK)
            out.flush()
            time.sleep(0.2)
            quick.write_bytes(FITS_BLOCK)        # ... when the next one lands complete
            time.sleep(0.2)
            assert arrivals.get(timeout=0.1) == [], "the later file waits for the earlier one"
            out.write(FITS_BLOCK)
        assert collect(arrivals, 2) == [str(slow), str(quick)]
        # a file that never completes holds the next one back only for max_hold_s
        with open(stuck, "wb") as out:
            while True:
                out.write(FITS_BLOCK)
                out.flush()
                time.sleep(0.1)
                if not (root / "S20160315S0004.fits").exists():
                    (root / "S20160315S0004.fits").write_bytes(FITS_BLOCK)
                    began = time.monotonic()
                got = arrivals.get(timeout=0)
                if got:
                    break
        assert got == [str(root / "S20160315S0004.fits")]
        assert 1.4 < time.monotonic() - began < 4
    finally:
        arrivals.stop()
