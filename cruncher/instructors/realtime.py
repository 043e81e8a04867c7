"""The realtime scanner: ``cruncher scan [RAWDIR] [--backend URL]``, the service observers rely on.

Files that arrive complete under the raw-data root (:mod:`arrivals`) are ingested into the
database, their header facts go through the state machine (:mod:`fsm`), and the actions become
instructions for a backend (:mod:`dispatch`). Everything that happens to a file is logged; frames
the machine does not handle get a note in the database.

Restart-safe: on start the scanner replays the frames the database knows that were written within
``realtime.max_age_days`` through a fresh machine, so it is back in the state it was in; the
instructions a backend sharing the database has journaled are not sent again (their ids are
derived from their content). Files that arrived while it was down are found by the first scan.
Files older than ``max_age_days`` are not processed in realtime: they are counted and listed as
candidates for ``reprocess``.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cruncher.db import queries
from cruncher.db.ingest import ingest
from cruncher.errors import CruncherError, RetryableError
from cruncher.instructors import fsm
from cruncher.instructors.dispatch import Layout, describe, instruction_for
from cruncher.messages import Instruction

_log = logging.getLogger(__name__)

Send = Callable[[list[Instruction]], object]


class Scanner:
    """Arrivals in, instructions out.

    Parameters
    ----------
    engine
        The database (ingest, bad-file notes, the backend's journal).
    layout
        Where products and calibrations go.
    send
        Sends a list of instructions to the backend; raises on failure (they are kept and sent
        again on the next tick).
    gap_min, idle_min, max_age_s
        ``realtime.sequence_gap_min``, ``realtime.idle_close_min`` (None: ``gap_min``) and
        ``realtime.max_age_days`` in seconds.
    params
        Parameters for the PSF-subtraction algorithms, sent with every sequence's instructions.
    """

    def __init__(self, *, engine, layout: Layout, send: Send, gap_min: float = 30.0,
                 idle_min: float | None = None, max_age_s: float = 2 * 86400.0, clock: Callable[[], float] = time.time,
                 params: Mapping[str, Any] | None = None) -> None:
        self.engine, self.layout, self.send = engine, layout, send
        self.params = dict(params or {})
        self.machine = fsm.Machine(gap_min=gap_min, idle_min=idle_min)
        self.max_age_s = max_age_s
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.candidates: list[str] = []          # too old for realtime: for reprocess
        self._fed: set[str] = set()
        self._sent: set[str] = set()
        self._unsent: list[Instruction] = []
        self._last_arrival = clock()
        self._lock = threading.Lock()

    # --- the three things that happen --------------------------------------------------

    def resume(self) -> int:
        """Replay the recent frames the database knows; send what was not sent. Returns how many
        frames were replayed."""
        since = int((self.clock() - self.max_age_s) * 1e9)
        rows = queries.raw_written_since(self.engine, since)
        bad = queries.bad_files(self.engine, [row["filename"] for row in rows])
        frames = [fsm.Frame.from_row(row, bad=row["filename"] in bad) for row in rows]
        with self._lock:
            actions = self.machine.feed_all(frames)
            self._fed.update(f.name for f in frames)
            self._dispatch(actions, replay=True)
        if frames:
            _log.info("resumed: %d recent frame(s) replayed, state %s", len(frames),
                      self.machine.state.value)
        return len(frames)

    def arrived(self, paths: Iterable[str]) -> list[fsm.Action]:
        """Files that arrived complete (one batch): ingest, then feed the machine."""
        frames = self._frames([p for p in paths if self._recent(p)])
        with self._lock:
            if frames:
                self._last_arrival = self.clock()
            actions = self.machine.feed_all(frames)
            self._fed.update(f.name for f in frames)
            self._dispatch(actions)
        return actions

    def tick(self) -> list[fsm.Action]:
        """Time passes: close runs idle for the gap, retry instructions not yet delivered."""
        with self._lock:
            actions = self.machine.tick((self.clock() - self._last_arrival) / 60.0)
            self._dispatch(actions)          # also retries what was not delivered
        return actions

    def close(self) -> list[fsm.Action]:
        """No more data (``--once``): finish whatever is open."""
        with self._lock:
            actions = self.machine.close()
            self._dispatch(actions)
        return actions

    @property
    def frames_handled(self) -> int:
        """Frames fed to the state machine, their instructions sent (or kept to send)."""
        with self._lock:
            return len(self._fed)

    @property
    def unsent(self) -> int:
        """Instructions not delivered yet (the backend was unreachable)."""
        return len(self._unsent)

    # --- internals --------------------------------------------------------------------

    def _recent(self, path: str) -> bool:
        """Whether ``path`` is for realtime (else it is listed for reprocess)."""
        try:
            age = self.clock() - os.stat(path).st_mtime
        except OSError as exc:
            _log.warning("%s: gone before it could be read (%s)", path, exc, extra={"path": path})
            return False
        if age <= self.max_age_s:
            return True
        self.counts["too old"] += 1
        self.candidates.append(path)
        _log.info("%s: written %.1f days ago, left for reprocess", path, age / 86400,
                  extra={"path": path})
        return False

    def _frames(self, paths: list[str]) -> list[fsm.Frame]:
        """Ingest a batch (one pass, a few queries); the frames not fed before. Unreadable files
        are noted and logged; they are read again if they change."""
        if not paths:
            return []
        report = ingest(self.engine, paths, progress=False)
        for path, reason in report.failed:
            self.counts["unreadable"] += 1
            self._note_once(path, f"realtime scanner could not read it: {reason}")
        failed = {path for path, _ in report.failed}
        rows = queries.raw_by_names(self.engine, [p for p in paths if p not in failed])
        bad = queries.bad_files(self.engine, list(rows))
        frames = []
        for name, row in rows.items():
            if name in self._fed:
                self.counts["seen before"] += 1
                _log.info("%s: already handled, not fed again", row["path"],
                          extra={"path": row["path"]})
                continue
            self.counts["ingested"] += 1
            frames.append(fsm.Frame.from_row(row, bad=name in bad))
        return frames

    def _dispatch(self, actions: list[fsm.Action], *, replay: bool = False) -> None:
        batch = []
        covered = _covered_by_a_later_quicklook(actions)
        for i, action in enumerate(actions):
            self.counts[type(action).__name__] += 1
            if i in covered:
                if not replay:
                    _log.info("%s: cube, with the quicklook of the frames that came with it",
                              action.frame.name)
                continue
            instruction = instruction_for(action, self.layout, params=self.params)
            if isinstance(action, fsm.NotHandled):
                self._note_once(action.frame.path, f"not handled by the realtime scanner: "
                                                   f"{action.reason}")
            if instruction is None:
                if not replay:
                    _log.info("%s", describe(action))
                continue
            if not replay:
                _log.info("%s -> instruction %s", describe(action), instruction.id)
            batch.append(instruction)
        if replay and batch:
            known = set(queries.job_states(self.engine, [i.id for i in batch]))
            self._sent.update(known)
            batch = [i for i in batch if i.id not in known]
            if batch:
                _log.info("resumed: %d instruction(s) not journaled yet are sent now", len(batch))
        self._deliver(batch)

    def _deliver(self, batch: list[Instruction]) -> None:
        pending = [i for i in self._unsent + batch if i.id not in self._sent]
        if not pending:
            return
        try:
            self.send(pending)
        except (RetryableError, OSError) as exc:
            self._unsent = pending
            _log.warning("%d instruction(s) not delivered (%s); retried on the next tick",
                         len(pending), exc)
            return
        self._unsent = []
        self._sent.update(i.id for i in pending)
        self.counts["instructions sent"] += len(pending)

    def _note_once(self, path: str, text: str) -> None:
        try:
            if not any(n["text"] == text for n in queries.notes_of(self.engine, path)):
                queries.add_note(self.engine, path, text, user="realtime")
        except CruncherError as exc:
            _log.warning("%s: note not recorded (%s)", path, exc, extra={"path": path})


def _covered_by_a_later_quicklook(actions: list[fsm.Action]) -> set[int]:
    """Indices of the ReduceFrame actions a later one of the same sequence covers: its instruction
    names their frames too, so a batch of 1,000 frames is one instruction, not 1,000 growing ones."""
    last: dict[str, int] = {}
    for i, action in enumerate(actions):
        if isinstance(action, fsm.ReduceFrame):
            last[action.sequence[0].name] = i
    return {i for i, action in enumerate(actions) if isinstance(action, fsm.ReduceFrame)
            and last[action.sequence[0].name] != i}


def run(scanner: Scanner, arrivals, stop: threading.Event, *, tick_s: float = 5.0) -> None:
    """The service loop: batches of arrivals, and a tick every ``tick_s``."""
    next_tick = time.monotonic() + tick_s
    while not stop.is_set():
        batch = arrivals.get(timeout=min(1.0, tick_s))
        if batch:
            try:
                scanner.arrived(batch)
            except CruncherError as exc:          # e.g. the database went away: keep running
                _log.error("batch of %d file(s) not handled, tried again at the next rescan: %s",
                           len(batch), exc)
                arrivals.forget(batch)
        if time.monotonic() >= next_tick:
            scanner.tick()
            next_tick = time.monotonic() + tick_s


def layout_from(settings) -> Layout:
    return Layout(reduced=Path(settings.paths.reduced), calibrations=Path(settings.paths.calibrations))
