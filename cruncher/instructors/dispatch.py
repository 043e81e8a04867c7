"""From the state machine's actions to instructions for a backend.

A sequence's products go to ``<reduced>/<Object>/autoreduced/<YYYYMMDD>_<band>_Spec`` (named after
its first frame); calibrations to the calibrations directory. Instruction ids are derived from
their content, so the same action always makes the same instruction: a scanner replaying the
night after a restart recognises what it sent before.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cruncher.instructors.fsm import (Action, CombineDarks, FinishSequence, Frame, LeftOut,
                                      NotHandled, ReduceFrame, SolveWavelength)
from cruncher.instruments.gpi.keywords import dataset_dir
from cruncher.messages import Instruction

#: What a finished sequence gets: the Data Cruncher's full PSF subtraction.
FULL_PSFSUB = ("cadi", "klip", "contrast")


@dataclass(frozen=True)
class Layout:
    reduced: Path
    calibrations: Path

    def outdir(self, first: Frame) -> str:
        return str(self.reduced / dataset_dir(first.target_name, first.date, first.band,
                                              first.mode))


def instruction_for(action: Action, layout: Layout, *, force: bool = False,
                    params: Mapping[str, Any] | None = None) -> Instruction | None:
    """The instruction an action asks for (None: it asks for none, e.g. a frame not handled).
    ``force``: redo work the journal says is done (reprocessing); ``params``: parameters for the
    PSF-subtraction algorithms of sequences (the instruction's ``params``)."""
    if isinstance(action, ReduceFrame):
        return sequence_instruction(action.sequence, layout, quicklook=True, psfsub=("cadi",),
                                    force=force, params=params)
    if isinstance(action, FinishSequence):
        return sequence_instruction(action.frames, layout, force=force, params=params)
    if isinstance(action, CombineDarks | SolveWavelength):
        frames = action.frames if isinstance(action, CombineDarks) else (action.frame,)
        return Instruction(files=tuple(f.path for f in frames), outdir=str(layout.calibrations),
                           level="raw", mode="cal", band=frames[0].band, force=force)
    return None


def sequence_instruction(frames: tuple[Frame, ...], layout: Layout, *, quicklook: bool = False,
                         psfsub: tuple[str, ...] = FULL_PSFSUB, force: bool = False,
                         cubes: tuple[str, ...] | None = None,
                         params: Mapping[str, Any] | None = None) -> Instruction:
    """A sequence's instruction: from its raw frames, or from ``cubes`` already made of them."""
    first = frames[0]
    files = cubes if cubes is not None else tuple(f.path for f in frames)
    return Instruction(files=files, outdir=layout.outdir(first),
                       level="cube" if cubes is not None else "raw", mode=first.mode,
                       quicklook=quicklook, psfsub=psfsub, target=first.object or None,
                       band=first.band, force=force, params=dict(params or {}))


def describe(action: Action) -> str:
    """One log line."""
    if isinstance(action, ReduceFrame):
        return (f"{action.frame.name}: cube and quicklook ({len(action.sequence)} frame(s) of "
                f"{action.frame.target_name} so far)")
    if isinstance(action, FinishSequence):
        first = action.frames[0]
        return (f"sequence of {first.target_name} {first.band} finished "
                f"({len(action.frames)} frames, {action.reason}): full PSF subtraction")
    if isinstance(action, CombineDarks):
        return f"{len(action.frames)} dark(s) of {action.frames[0].itime:g} s: combine"
    if isinstance(action, SolveWavelength):
        return f"{action.frame.name}: arc snapshot, quick wavelength solution"
    if isinstance(action, NotHandled):
        return f"{action.frame.name}: not handled ({action.reason})"
    if isinstance(action, LeftOut):
        return f"{action.frame.name}: marked bad, left out"
    return repr(action)
