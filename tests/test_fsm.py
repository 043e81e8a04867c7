"""The realtime scanner's state machine, without files or threads."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cruncher.instructors import fsm
from cruncher.instructors.fsm import (CombineDarks, Event, FinishSequence, Frame, LeftOut, Machine,
                                      NotHandled, ReduceFrame, SolveWavelength, State)

MJD0 = 57462.0
MINUTE = 1 / 1440


def frame(n: int, minute: float, obstype: str = "OBJECT", target: str = "hd95086",
          band: str = "H", mode: str = "spec", itime: float = 59.6, bad: bool = False) -> Frame:
    return Frame(name=f"S20160315S{n:04d}.fits", path=f"/raw/160315/S20160315S{n:04d}.fits",
                 obstype=obstype, object_key=target, band=band, mode=mode, itime=itime,
                 mjd=MJD0 + minute * MINUTE, bad=bad)


def test_the_table_covers_every_event_that_can_happen():
    impossible = {(State.IDLE, Event.SCIENCE_SAME), (State.IDLE, Event.DARK_SAME),
                  (State.SEQUENCE, Event.DARK_SAME), (State.DARKS, Event.SCIENCE_SAME)}
    for state in State:
        for event in Event:
            if (state, event) in impossible:
                assert (state, event) not in fsm.TABLE
                continue
            steps, after = fsm.TABLE[(state, event)]
            assert isinstance(after, State)
            assert all(callable(getattr(Machine, f"_{step}", None)) for step in steps)


def test_a_night_of_darks_arcs_and_two_sequences():
    darks60 = [frame(i, i, "DARK", "dark") for i in range(1, 4)]
    darks20 = [frame(i, i, "DARK", "dark", itime=20.0) for i in range(4, 6)]
    arc_a = frame(6, 20, "ARC", itime=20.0)
    sci_a = [frame(i, 21 + i, target="hd95086") for i in range(7, 11)]
    arc_b = frame(11, 40, "ARC", target="betapic", itime=20.0)
    sci_b = [frame(i, 41 + i, target="betapic") for i in range(12, 15)]
    machine = Machine(gap_min=30)
    out = machine.feed_all(darks60 + darks20 + [arc_a] + sci_a + [arc_b] + sci_b)
    assert machine.state is State.SEQUENCE
    assert out[:3] == [CombineDarks(tuple(darks60)), CombineDarks(tuple(darks20)),
                       SolveWavelength(arc_a)]
    assert out[3:7] == [ReduceFrame(f, tuple(sci_a[:k + 1])) for k, f in enumerate(sci_a)]
    assert out[7] == SolveWavelength(arc_b)
    assert out[8] == FinishSequence(tuple(sci_a), "betapic/H/spec follows hd95086/H/spec")
    assert out[9:] == [ReduceFrame(f, tuple(sci_b[:k + 1])) for k, f in enumerate(sci_b)]
    assert machine.tick(29) == []
    assert machine.tick(31) == [
        FinishSequence(tuple(sci_b), "no new frame for 30 min")]
    assert machine.state is State.IDLE and machine.close() == []


def test_idleness_can_finish_a_sequence_sooner_than_the_header_gap():
    frames = [frame(i, 20 * i) for i in range(1, 4)]     # 20 min apart: one sequence
    machine = Machine(gap_min=30, idle_min=5)
    assert [type(a).__name__ for a in machine.feed_all(frames)] == ["ReduceFrame"] * 3
    assert machine.tick(4.9) == []
    assert machine.tick(5.1) == [FinishSequence(tuple(frames), "no new frame for 5 min")]


def test_a_band_change_or_a_gap_starts_a_new_sequence():
    h = [frame(1, 0), frame(2, 1)]
    j = [frame(3, 2, band="J")]
    late = [frame(4, 40, band="J")]
    out = fsm.run(h + j + late, gap_min=30)
    finished = [a for a in out if isinstance(a, FinishSequence)]
    assert [a.frames for a in finished] == [tuple(h), tuple(j), tuple(late)]
    assert "gap" in finished[1].reason and finished[2].reason == "end of the data"


def test_bad_and_unsupported_frames_are_reported_and_do_not_break_a_sequence():
    frames = [frame(1, 0), frame(2, 1, bad=True), frame(3, 2, mode="pol"),
              frame(4, 3, "FLAT"), frame(5, 4, band="K1", target="sky"), frame(6, 5)]
    out = fsm.run(frames)
    assert LeftOut(frames[1]) in out
    reasons = {a.frame.name: a.reason for a in out if isinstance(a, NotHandled)}
    assert "polarimetry" in reasons[frames[2].name]
    assert "OBSTYPE FLAT" in reasons[frames[3].name]
    assert "sky" in reasons[frames[4].name]
    assert [a.frames for a in out if isinstance(a, FinishSequence)] == [(frames[0], frames[5])]


def test_darks_in_the_middle_of_a_sequence_are_combined_and_the_sequence_goes_on():
    frames = [frame(1, 0), frame(2, 1, "DARK", "dark"), frame(3, 2, "DARK", "dark"), frame(4, 3)]
    out = fsm.run(frames)
    assert out[1] == CombineDarks((frames[1], frames[2]))
    assert out[-1] == FinishSequence((frames[0], frames[3]), "end of the data")


# --- properties on random nights -------------------------------------------------------------

KINDS = st.sampled_from([
    dict(obstype="OBJECT", target="hd95086"), dict(obstype="OBJECT", target="betapic"),
    dict(obstype="OBJECT", target="betapic", band="J"), dict(obstype="OBJECT", mode="pol"),
    dict(obstype="DARK", target="dark"), dict(obstype="DARK", target="dark", itime=20.0),
    dict(obstype="ARC", itime=20.0), dict(obstype="FLAT"),
    dict(obstype="OBJECT", target="sky", band="K1")])


@st.composite
def nights(draw) -> list[Frame]:
    kinds = draw(st.lists(KINDS, min_size=1, max_size=60))
    steps = draw(st.lists(st.sampled_from([0.5, 1.0, 1.5, 10.0, 29.0, 45.0]),
                          min_size=len(kinds), max_size=len(kinds)))
    bad = draw(st.lists(st.booleans(), min_size=len(kinds), max_size=len(kinds)))
    minute, out = 0.0, []
    for n, (kind, step, is_bad) in enumerate(zip(kinds, steps, bad), start=1):
        minute += step
        out.append(frame(n, minute, bad=is_bad and n % 3 == 0, **kind))
    return out


def _science(frames):
    return [f for f in frames if not f.bad and fsm.classify(f)[0] is fsm.Kind.SCIENCE]


@settings(max_examples=300, deadline=None)
@given(nights())
def test_every_frame_gets_exactly_what_it_should(frames):
    out = fsm.run(frames, gap_min=30)
    science = _science(frames)
    reduced = [a.frame for a in out if isinstance(a, ReduceFrame)]
    assert sorted(f.name for f in reduced) == sorted(f.name for f in science)
    sequences = [a.frames for a in out if isinstance(a, FinishSequence)]
    assert sorted(f.name for s in sequences for f in s) == sorted(f.name for f in science)
    for seq in sequences + [a.sequence for a in out if isinstance(a, ReduceFrame)]:
        assert len({f.key for f in seq}) == 1                 # never mixes target, band, mode
        assert all((b.mjd - a.mjd) / MINUTE <= 30 + 1e-6 for a, b in zip(seq, seq[1:]))
    darks = [f for f in frames if not f.bad and f.obstype == "DARK"]
    combined = [a.frames for a in out if isinstance(a, CombineDarks)]
    assert sorted(f.name for c in combined for f in c) == sorted(f.name for f in darks)
    assert all(len({f.itime for f in c}) == 1 for c in combined)
    others = [f for f in frames if not f.bad and fsm.classify(f)[0] is fsm.Kind.UNSUPPORTED]
    assert sorted(a.frame.name for a in out if isinstance(a, NotHandled)) == \
        sorted(f.name for f in others)
    assert sorted(a.frame.name for a in out if isinstance(a, LeftOut)) == \
        sorted(f.name for f in frames if f.bad)


@settings(max_examples=200, deadline=None)
@given(nights(), st.randoms(use_true_random=False))
def test_the_outcome_does_not_depend_on_how_files_arrive_in_batches(frames, rnd: random.Random):
    whole = fsm.run(frames, gap_min=30)
    machine, batched, i = Machine(gap_min=30), [], 0
    while i < len(frames):
        size = rnd.randint(1, 5)
        batch = frames[i:i + size]
        rnd.shuffle(batch)                               # landed in any order
        batched += machine.feed_all(batch)
        batched += machine.tick(0.2)                     # a tick soon after
        i += size
    assert batched + machine.close() == whole


@pytest.mark.parametrize("gap", [5.0, 30.0])
def test_the_gap_setting_is_what_splits(gap):
    frames = [frame(1, 0), frame(2, 10), frame(3, 20)]
    sequences = [a for a in fsm.run(frames, gap_min=gap) if isinstance(a, FinishSequence)]
    assert len(sequences) == (3 if gap < 10 else 1)


@settings(max_examples=200, deadline=None)
@given(nights(), st.randoms(use_true_random=False))
def test_the_instructions_ask_for_the_same_work_however_files_are_batched(frames, rnd):
    """The scanner sends one quicklook per sequence and batch (it names every frame so far):
    batching changes how many quicklooks, never which cubes, sequences or calibrations."""
    from pathlib import Path

    from cruncher.instructors.dispatch import Layout, instruction_for
    from cruncher.instructors.realtime import _covered_by_a_later_quicklook

    layout = Layout(reduced=Path("/reduced"), calibrations=Path("/calibrations"))

    def work(batches) -> tuple:
        machine, sent = Machine(gap_min=30), []
        for batch in batches:
            actions = machine.feed_all(batch)
            skip = _covered_by_a_later_quicklook(actions)
            sent += [instruction_for(a, layout) for i, a in enumerate(actions) if i not in skip]
        sent += [instruction_for(a, layout) for a in machine.close()]
        sent = [i for i in sent if i is not None]
        cubes = sorted({f for i in sent if i.quicklook for f in i.files})
        return cubes, [i for i in sent if not i.quicklook]

    cuts = sorted(rnd.sample(range(1, len(frames)), min(len(frames) - 1, rnd.randint(0, 8))))
    batches = [frames[a:b] for a, b in zip([0] + cuts, cuts + [len(frames)])]
    assert work(batches) == work([[f] for f in frames])
    cubes, _ = work([frames])
    assert cubes == sorted(f.path for f in _science(frames))
