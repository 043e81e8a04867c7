"""The realtime scanner's state machine: what to instruct when a frame arrives or time passes.

Pure logic: frames (what their headers say) and clock ticks in, actions out. No files, threads or
clocks of its own, so it is tested alone, and replaying the night's frames after a restart gives
the same actions again (the scanner then sends only those it has not sent).

The machine follows the observing night as the Data Cruncher's did:

- a spectral science frame of the same target, band and mode as the open sequence (and within
  ``gap`` of its last frame) extends it: reduce its cube and update the quicklook;
- a science frame of another target, band or mode, or one taken ``gap`` after the sequence's last
  (by the headers' times), finishes the open sequence (full PSF subtraction of all its cubes) and
  opens a new one; a tick saying no frame has arrived for ``gap`` finishes it too;
- darks accumulate while they share an exposure time; the run is combined when anything else
  arrives, a dark of another exposure time, or a gap;
- an arc snapshot is solved at once, before the science frames after it are reduced;
- frames marked bad are left out of everything; frames not supported yet (polarimetry, K-band
  sky/thermal frames, flats, unknown types) are reported as not handled.

States are which runs are open; the transition table says, for each state and event, the steps
to take (in order) and the next state.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

#: Minutes in a day, for MJD arithmetic.
_MIN_PER_DAY = 1440.0


class Kind(str, enum.Enum):
    SCIENCE = "science"
    DARK = "dark"
    ARC = "arc"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, kw_only=True)
class Frame:
    """The header facts the machine decides on (a row of the database's ``raw`` table)."""

    name: str
    path: str
    obstype: str
    object_key: str
    band: str
    mode: str
    itime: float
    mjd: float
    bad: bool = False
    object: str = ""        # OBJECT as written, for the output directory
    date: str = ""          # DATE-OBS as YYYYMMDD

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, bad: bool = False) -> Frame:
        date = row["date_obs"]
        return cls(name=row["filename"], path=row["path"], obstype=str(row["obstype"]).upper(),
                   object_key=row["object_key"], band=row["band"], mode=row["mode"],
                   itime=float(row["itime"]), mjd=float(row["mjd_obs"]), bad=bad,
                   object=row["object"], date=date.strftime("%Y%m%d") if date else "")

    @property
    def target_name(self) -> str:
        """OBJECT as written (its normalised key when unknown)."""
        return self.object or self.object_key

    @property
    def key(self) -> tuple[str, str, str]:
        """What a sequence shares: target, band, mode."""
        return self.object_key, self.band, self.mode


def classify(frame: Frame) -> tuple[Kind, str]:
    """The frame's kind, and for an unsupported one the reason."""
    if frame.obstype == "DARK":
        return Kind.DARK, ""
    if frame.obstype == "ARC":
        if frame.mode != "spec":
            return Kind.UNSUPPORTED, f"{frame.mode} arc (only spectral arc snapshots are solved)"
        return Kind.ARC, ""
    if frame.obstype != "OBJECT":
        return Kind.UNSUPPORTED, f"OBSTYPE {frame.obstype or '?'}"
    if frame.mode == "pol":
        return Kind.UNSUPPORTED, "polarimetry (not supported yet)"
    if frame.mode != "spec":
        return Kind.UNSUPPORTED, f"mode {frame.mode or '?'}"
    if frame.band.startswith("K") and any(w in frame.object_key for w in ("sky", "thermal")):
        return Kind.UNSUPPORTED, "K-band sky/thermal frame (needs a manual reduction)"
    return Kind.SCIENCE, ""


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReduceFrame:
    """Reduce ``frame``'s cube and update the quicklook of its sequence so far."""

    frame: Frame
    sequence: tuple[Frame, ...]


@dataclass(frozen=True)
class FinishSequence:
    """Full PSF subtraction of a finished sequence; ``reason`` says what ended it."""

    frames: tuple[Frame, ...]
    reason: str


@dataclass(frozen=True)
class CombineDarks:
    frames: tuple[Frame, ...]


@dataclass(frozen=True)
class SolveWavelength:
    """The quick wavelength solution of an arc snapshot."""

    frame: Frame


@dataclass(frozen=True)
class NotHandled:
    frame: Frame
    reason: str


@dataclass(frozen=True)
class LeftOut:
    """A frame marked bad: in no sequence, no dark run."""

    frame: Frame


Action = ReduceFrame | FinishSequence | CombineDarks | SolveWavelength | NotHandled | LeftOut


# --- the table -------------------------------------------------------------------------------


class State(str, enum.Enum):
    IDLE = "idle"
    SEQUENCE = "sequence"
    DARKS = "darks"
    SEQUENCE_AND_DARKS = "sequence+darks"


class Event(str, enum.Enum):
    SCIENCE_SAME = "science of the open sequence"
    SCIENCE_NEW = "science starting a sequence"
    DARK_SAME = "dark of the open run"
    DARK_NEW = "dark starting a run"
    ARC = "arc"
    OTHER = "unsupported frame"
    BAD = "bad frame"
    TIMEOUT = "no frame for the gap"


S, D, SD, I = State.SEQUENCE, State.DARKS, State.SEQUENCE_AND_DARKS, State.IDLE
#: (state, event) -> (steps in order, next state). A missing pair cannot happen (see _event).
TABLE: dict[tuple[State, Event], tuple[tuple[str, ...], State]] = {
    (I, Event.SCIENCE_NEW): (("open_sequence",), S),
    (I, Event.DARK_NEW): (("open_darks",), D),
    (I, Event.ARC): (("solve_arc",), I),
    (I, Event.OTHER): (("not_handled",), I),
    (I, Event.BAD): (("leave_out",), I),
    (I, Event.TIMEOUT): ((), I),
    (S, Event.SCIENCE_SAME): (("extend_sequence",), S),
    (S, Event.SCIENCE_NEW): (("finish_sequence", "open_sequence"), S),
    (S, Event.DARK_NEW): (("open_darks",), SD),
    (S, Event.ARC): (("solve_arc",), S),
    (S, Event.OTHER): (("not_handled",), S),
    (S, Event.BAD): (("leave_out",), S),
    (S, Event.TIMEOUT): (("finish_sequence",), I),
    (D, Event.SCIENCE_NEW): (("combine_darks", "open_sequence"), S),
    (D, Event.DARK_SAME): (("extend_darks",), D),
    (D, Event.DARK_NEW): (("combine_darks", "open_darks"), D),
    (D, Event.ARC): (("combine_darks", "solve_arc"), I),
    (D, Event.OTHER): (("combine_darks", "not_handled"), I),
    (D, Event.BAD): (("leave_out",), D),
    (D, Event.TIMEOUT): (("combine_darks",), I),
    (SD, Event.SCIENCE_SAME): (("combine_darks", "extend_sequence"), S),
    (SD, Event.SCIENCE_NEW): (("combine_darks", "finish_sequence", "open_sequence"), S),
    (SD, Event.DARK_SAME): (("extend_darks",), SD),
    (SD, Event.DARK_NEW): (("combine_darks", "open_darks"), SD),
    (SD, Event.ARC): (("combine_darks", "solve_arc"), S),
    (SD, Event.OTHER): (("combine_darks", "not_handled"), S),
    (SD, Event.BAD): (("leave_out",), SD),
    (SD, Event.TIMEOUT): (("combine_darks", "finish_sequence"), I),
}


@dataclass
class _Runs:
    """What is open: the science sequence and the dark run (frames in arrival order)."""

    sequence: list[Frame] = field(default_factory=list)
    darks: list[Frame] = field(default_factory=list)


@dataclass
class Machine:
    """The scanner's state machine. ``gap_min``: minutes between two frames' headers that end
    the open runs (GOTO's MAXTDELTA; the ``realtime.sequence_gap_min`` setting); ``idle_min``:
    minutes without a new arrival that end them (``realtime.idle_close_min``; default
    ``gap_min``)."""

    gap_min: float = 30.0
    idle_min: float | None = None
    state: State = State.IDLE
    runs: _Runs = field(default_factory=_Runs)
    #: why the open sequence will be finished (set by the event that finishes it)
    _reason: str = ""

    # --- events --------------------------------------------------------------------------

    def feed(self, frame: Frame) -> list[Action]:
        """A new frame (in time order): the actions it causes."""
        event, detail = self._event(frame)
        self._reason = detail
        return self._apply(event, frame)

    def feed_all(self, frames) -> list[Action]:
        """Frames that arrived together (a sync delivering several at once): in time order,
        whatever order they landed in."""
        actions: list[Action] = []
        for frame in sorted(frames, key=lambda f: (f.mjd, f.name)):
            actions.extend(self.feed(frame))
        return actions

    def tick(self, idle_min: float) -> list[Action]:
        """Time passes: ``idle_min`` minutes since the last frame *arrived* (the clock of the
        night, not of the headers: a night replayed or synced late still times out properly).
        Past ``idle_min``, the open runs are closed."""
        limit = self.gap_min if self.idle_min is None else self.idle_min
        if self.state is State.IDLE or idle_min <= limit:
            return []
        self._reason = f"no new frame for {limit:g} min"
        return self._apply(Event.TIMEOUT, None)

    def close(self) -> list[Action]:
        """End of input (a finished night, or a reprocessing query): close whatever is open."""
        self._reason = "end of the data"
        return self._apply(Event.TIMEOUT, None)

    # --- mechanics -----------------------------------------------------------------------

    def _event(self, frame: Frame) -> tuple[Event, str]:
        if frame.bad:
            return Event.BAD, ""
        kind, _ = classify(frame)
        if kind is Kind.SCIENCE:
            open_seq = self.runs.sequence
            if open_seq and open_seq[-1].key == frame.key and self._within_gap(open_seq[-1], frame):
                return Event.SCIENCE_SAME, ""
            if not open_seq:
                return Event.SCIENCE_NEW, ""
            last = open_seq[-1]
            if last.key != frame.key:
                return Event.SCIENCE_NEW, f"{'/'.join(frame.key)} follows {'/'.join(last.key)}"
            return Event.SCIENCE_NEW, f"a gap of more than {self.gap_min:g} min"
        if kind is Kind.DARK:
            darks = self.runs.darks
            if darks and _same_itime(darks[-1], frame) and self._within_gap(darks[-1], frame):
                return Event.DARK_SAME, ""
            return Event.DARK_NEW, ""
        return (Event.ARC, "") if kind is Kind.ARC else (Event.OTHER, "")

    def _within_gap(self, earlier: Frame, later: Frame) -> bool:
        return (later.mjd - earlier.mjd) * _MIN_PER_DAY <= self.gap_min

    def _apply(self, event: Event, frame: Frame | None) -> list[Action]:
        steps, after = TABLE[(self.state, event)]
        actions: list[Action] = []
        for step in steps:
            actions.extend(getattr(self, f"_{step}")(frame))
        self.state = after
        return actions

    # --- steps (one per name in the table) -------------------------------------------------

    def _open_sequence(self, frame: Frame) -> list[Action]:
        self.runs.sequence = [frame]
        return [ReduceFrame(frame, (frame,))]

    def _extend_sequence(self, frame: Frame) -> list[Action]:
        self.runs.sequence.append(frame)
        return [ReduceFrame(frame, tuple(self.runs.sequence))]

    def _finish_sequence(self, _frame: Frame | None) -> list[Action]:
        frames, self.runs.sequence = tuple(self.runs.sequence), []
        return [FinishSequence(frames, self._reason or "sequence ended")]

    def _open_darks(self, frame: Frame) -> list[Action]:
        self.runs.darks = [frame]
        return []

    def _extend_darks(self, frame: Frame) -> list[Action]:
        self.runs.darks.append(frame)
        return []

    def _combine_darks(self, _frame: Frame | None) -> list[Action]:
        frames, self.runs.darks = tuple(self.runs.darks), []
        return [CombineDarks(frames)]

    def _solve_arc(self, frame: Frame) -> list[Action]:
        return [SolveWavelength(frame)]

    def _not_handled(self, frame: Frame) -> list[Action]:
        return [NotHandled(frame, classify(frame)[1])]

    def _leave_out(self, frame: Frame) -> list[Action]:
        return [LeftOut(frame)]


def _same_itime(a: Frame, b: Frame) -> bool:
    return round(a.itime, 3) == round(b.itime, 3)


def run(frames, *, gap_min: float = 30.0) -> list[Action]:
    """Every action for a list of frames taken as a whole (sorted by time), closed at the end:
    how ``reprocess`` cuts a query's frames into sequences."""
    machine = Machine(gap_min=gap_min)
    return machine.feed_all(frames) + machine.close()


__all__ = ["Action", "CombineDarks", "Event", "FinishSequence", "Frame", "Kind", "LeftOut",
           "Machine", "NotHandled", "ReduceFrame", "SolveWavelength", "State", "TABLE", "classify",
           "run"]
