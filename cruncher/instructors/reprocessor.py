"""The reprocessor: redo chosen datasets, or the whole campaign, from what the database knows.

A query on the ``raw`` table (bad frames never included) goes through the same state machine as
the realtime scanner, taken as a whole: sequences are cut where the observing night cut them (a
change of target, band or mode, or a gap longer than ``sequence_gap_min``), darks and arcs of the
query become calibration instructions, and each sequence becomes one instruction: from raw frames
(cubes, then PSF subtraction) or from the cubes already made (PSF subtraction only). The
instructions carry ``force``: reprocessing means redoing work the journal says is done.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cruncher.db import queries
from cruncher.errors import NoDataError, ValidationError
from cruncher.instructors import fsm
from cruncher.instructors.dispatch import (FULL_PSFSUB, Layout, instruction_for,
                                           sequence_instruction)
from cruncher.messages import Instruction

_log = logging.getLogger(__name__)
SOURCES = ("raw", "cubes")


@dataclass(frozen=True, kw_only=True)
class Query:
    """Which frames: every criterion given must hold (``target=None`` only with ``everything``)."""

    target: str | None = None
    band: str | None = None
    date: dt.date | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    mode: str | None = None
    program: str | None = None
    everything: bool = False

    def describe(self) -> str:
        parts = [f"target {self.target!r}" if self.target else "all targets"]
        parts += [f"{k} {v}" for k, v in (("band", self.band), ("date", self.date),
                                           ("since", self.since), ("until", self.until),
                                           ("mode", self.mode), ("program", self.program)) if v]
        return ", ".join(parts)


@dataclass(frozen=True)
class Planned:
    """One instruction and what it is, for people."""

    label: str
    instruction: Instruction


@dataclass
class Plan:
    items: list[Planned]
    skipped: list[str]          # what could not be planned, and why


def frames_for(engine, query: Query) -> list[fsm.Frame]:
    """The query's frames (bad ones left out); a clear error, with close matches, if none."""
    if not query.everything and not query.target:
        raise ValidationError("--target", "give a target (or --all for every target)")
    rows = queries.find_raw(engine, target=query.target, band=query.band, date=query.date,
                            since=query.since, until=query.until, mode=query.mode,
                            program=query.program)
    if not rows:
        raise NoDataError(_nothing_found(engine, query))
    return [fsm.Frame.from_row(row) for row in rows]


def plan(engine, query: Query, *, layout: Layout, gap_min: float = 30.0, source: str = "raw",
         psfsub: tuple[str, ...] = FULL_PSFSUB, params: Mapping[str, Any] | None = None) -> Plan:
    """The instructions that reprocess the query's data (``params``: for the PSF-subtraction
    algorithms, as the realtime scanner's)."""
    if source not in SOURCES:
        raise ValidationError("--from", f"{source!r}: expected one of {', '.join(SOURCES)}")
    out = Plan(items=[], skipped=[])
    for action in fsm.run(frames_for(engine, query), gap_min=gap_min):
        if isinstance(action, fsm.FinishSequence):
            _plan_sequence(engine, action.frames, layout, source, psfsub, params, out)
        elif isinstance(action, fsm.CombineDarks | fsm.SolveWavelength) and source == "raw":
            out.items.append(Planned(_calibration_label(action),
                                     instruction_for(action, layout, force=True)))
        elif isinstance(action, fsm.NotHandled):
            out.skipped.append(f"{action.frame.name}: {action.reason}")
    return out


def _plan_sequence(engine, frames, layout: Layout, source: str, psfsub, params,
                   out: Plan) -> None:
    first = frames[0]
    label = f"{first.date} {first.target_name} {first.band} {first.mode}: {len(frames)} frames"
    if source == "raw":
        ins = sequence_instruction(frames, layout, psfsub=psfsub, force=True, params=params)
        out.items.append(Planned(f"{label} -> cubes, then {', '.join(psfsub) or 'nothing'}", ins))
        return
    cubes = tuple(c for f in frames if (c := _cube_of(engine, f.name)) is not None)
    if len(cubes) < 2:
        out.skipped.append(f"{label}: {len(cubes)} cube(s) on record; use --from raw")
        return
    ins = sequence_instruction(frames, layout, psfsub=psfsub, force=True, cubes=cubes,
                               params=params)
    out.items.append(Planned(f"{label} ({len(cubes)} cubes) -> {', '.join(psfsub)}", ins))


def _cube_of(engine, name: str) -> str | None:
    """The newest cube recorded for a raw frame."""
    cubes = [p for p in queries.products_of_raw(engine, name) if p["kind"] == "spdc"]
    return cubes[-1]["path"] if cubes else None


def _calibration_label(action: Any) -> str:
    if isinstance(action, fsm.CombineDarks):
        return f"{action.frames[0].date} {len(action.frames)} darks of {action.frames[0].itime:g} s"
    return f"{action.frame.date} arc {action.frame.name} -> quick wavelength solution"


def _nothing_found(engine, query: Query) -> str:
    text = f"no usable raw frames for {query.describe()}"
    if query.target and not queries.find_raw(engine, target=query.target, include_bad=True):
        close = queries.close_matches(engine, "object", query.target)
        return text + (f"; targets with a similar name: {', '.join(close)}" if close
                       else "; no target with a similar name either")
    if query.band and query.target:
        bands = sorted({r["band"] for r in queries.find_raw(engine, target=query.target)})
        return text + f"; bands on record for {query.target}: {', '.join(bands) or 'none'}"
    return text
