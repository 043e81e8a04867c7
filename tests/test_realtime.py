"""The realtime scanner's service logic on a real database, with a backend's journal recording
what it accepts (the backend itself is exercised end to end elsewhere)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cruncher.backend.client import BackendUnreachableError
from cruncher.backend.journal import Journal
from cruncher.db import queries
from cruncher.instructors.dispatch import Layout
from cruncher.instructors.realtime import Scanner


class Journaled:
    """Sends to 'a backend' that journals each instruction, as a real one does before replying;
    ``down`` makes it unreachable."""

    def __init__(self, engine) -> None:
        self.journal = Journal(engine)
        self.received: list = []
        self.down = False

    def __call__(self, instructions) -> None:
        if self.down:
            raise BackendUnreachableError("ws://127.0.0.1:1", "connection refused")
        for ins in instructions:
            self.journal.record_instruction(ins, check_bad=False)
            self.received.append(ins)

    def close(self) -> None:
        self.journal.close()


@pytest.fixture
def backend(engine):
    sender = Journaled(engine)
    yield sender
    sender.close()


def scanner(engine, send, tmp_path: Path, **kw) -> Scanner:
    layout = Layout(reduced=tmp_path / "reduced", calibrations=tmp_path / "calibrations")
    return Scanner(engine=engine, layout=layout, send=send, **kw)


def frames_of(night: Path) -> list[str]:
    return sorted(str(p) for p in night.rglob("*.fits"))


def test_a_night_becomes_calibrations_quicklooks_and_two_sequences(engine, backend, night,
                                                                   tmp_path):
    scan = scanner(engine, backend, tmp_path)
    paths = frames_of(night)
    for path in paths:
        scan.arrived([path])
    scan.close()
    assert _kinds(backend.received) == ["cal", "cal"] + ["quicklook"] * 6 + ["full"] + \
        ["quicklook"] * 3 + ["full"]
    darks, arc = backend.received[:2]
    assert [Path(f).name for f in darks.files] == [Path(p).name for p in paths[:2]]
    assert arc.files == (paths[2],)
    first_full = backend.received[8]
    assert first_full.files == tuple(paths[3:9]) and first_full.psfsub == ("cadi", "klip", "contrast")
    assert first_full.outdir == str(tmp_path / "reduced" / "HD_95086" / "autoreduced" /
                                    "20131118_H_Spec")
    assert backend.received[-1].files == tuple(paths[9:]) and backend.received[-1].band == "J"
    assert backend.received[7].files == tuple(paths[3:9])      # the quicklook of 6 frames so far


def test_a_batch_asks_for_one_quicklook_per_sequence(engine, backend, night, tmp_path):
    scan = scanner(engine, backend, tmp_path)
    paths = frames_of(night)
    scan.arrived(paths)                      # a sync delivering the whole night at once
    scan.close()
    assert _kinds(backend.received) == ["cal", "cal", "quicklook", "full", "quicklook", "full"]
    assert backend.received[2].files == tuple(paths[3:9])      # every frame of the sequence
    assert scan.counts["ReduceFrame"] == 9
    assert sorted(f for i in backend.received if i.mode == "spec" for f in i.files) == \
        sorted(paths[3:] * 2)                # each frame: its cube once, its full sequence once


def _kinds(instructions) -> list[str]:
    return [("cal" if i.mode == "cal" else "quicklook" if i.quicklook else "full")
            for i in instructions]


def test_a_restarted_scanner_resumes_and_instructs_nothing_twice(engine, backend, night, tmp_path):
    paths = frames_of(night)
    first = scanner(engine, backend, tmp_path)
    first.arrived(paths[:6])                          # darks, arc, 3 frames; then it dies
    sent_before = len(backend.received)
    second = scanner(engine, backend, tmp_path)
    assert second.resume() == 6
    assert len(backend.received) == sent_before       # all of it was journaled already
    second.arrived(paths)                              # the first scan sees everything again
    second.close()
    ids = [i.id for i in backend.received]
    # 2 calibrations, 1 quicklook per batch and sequence, 2 full sequences: nothing twice
    assert len(ids) == len(set(ids)) == 2 + (1 + 2) + 2
    quicklook = backend.received[sent_before]
    assert quicklook.files == tuple(paths[3:9])        # the sequence went on where it was


def test_unreadable_old_and_bad_files_are_reported_and_the_rest_goes_on(engine, backend, night,
                                                                        tmp_path, write_frame):
    paths = frames_of(night)
    truncated = Path(paths[5])
    truncated.write_bytes(truncated.read_bytes()[:4000])
    old = write_frame(50, object="HD 95086")
    three_days = time.time() - 3 * 86400
    os.utime(old, (three_days, three_days))
    queries.add_note(engine, paths[6], "AO loop open", bad=True)
    scan = scanner(engine, backend, tmp_path)
    scan.arrived(paths + [str(old)])
    scan.close()
    assert scan.counts["unreadable"] == 1 and scan.counts["LeftOut"] == 1
    assert scan.candidates == [str(old)]
    assert any("could not read" in n["text"] for n in queries.notes_of(engine, paths[5]))
    full = [i for i in backend.received if i.psfsub and not i.quicklook]
    assert full[0].files == (paths[3], paths[4], paths[7], paths[8])


def test_instructions_wait_for_an_unreachable_backend(engine, backend, night, tmp_path):
    scan = scanner(engine, backend, tmp_path)
    backend.down = True
    scan.arrived(frames_of(night)[:4])
    assert backend.received == [] and scan.unsent == 3
    scan.tick()
    assert scan.unsent == 3
    backend.down = False
    scan.tick()
    assert scan.unsent == 0 and len(backend.received) == 3


def test_a_quiet_gap_finishes_the_sequence(engine, backend, night, tmp_path):
    now = [time.time()]
    scan = scanner(engine, backend, tmp_path, gap_min=30, clock=lambda: now[0])
    scan.arrived(frames_of(night)[:6])
    now[0] += 29 * 60
    assert scan.tick() == []
    now[0] += 2 * 60
    finished = scan.tick()
    assert len(finished) == 1 and "no new frame for 30 min" in finished[0].reason
    assert backend.received[-1].psfsub == ("cadi", "klip", "contrast")
