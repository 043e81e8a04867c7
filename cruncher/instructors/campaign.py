"""A reprocessing campaign for ``super_cruncher``: its instructions, its phases, its done-log.

The instructions come from ``reprocess --export`` (JSON Lines, one :class:`Instruction` each), so
a cluster needs no database. Dark combinations form the first stage, quick wavelength solutions
(which need their darks) the second and sequences (which need both) the third. Within a
stage the longest sequences go first, so that the campaign does not end waiting for one long
sequence started last.

Phases, as the Data Cruncher reprocessed GPIES: ``cubes`` (raw frames to cubes, calibrations
included, no PSF subtraction), ``psfsub`` (PSF subtraction and contrast on the cubes a ``cubes``
phase made, found by their names next to each sequence's products), ``all`` (both in one go).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cruncher.errors import CruncherError
from cruncher.instruments.gpi.keywords import stem
from cruncher.messages import Instruction
from cruncher.pathmap import remap as remap_path

_log = logging.getLogger(__name__)
PHASES = ("cubes", "psfsub", "all")
DARKS, ARCS, SEQUENCES = 0, 1, 2


@dataclass(frozen=True)
class Task:
    """One unit of work handed to a rank: an instruction, its stage and a label for people."""

    instruction: Instruction
    stage: int                   # DARKS, ARCS or SEQUENCES: a stage waits for the one before
    label: str

    @property
    def id(self) -> str:
        return self.instruction.id

    @property
    def size(self) -> int:
        return len(self.instruction.files)


@dataclass
class Loaded:
    """The instruction file read: the tasks, and the lines that could not be used."""

    tasks: list[Task]
    problems: list[str]


def load(path: str | os.PathLike, phase: str = "all", *,
         remap: Mapping[str, str] | None = None, outdir: str | None = None) -> Loaded:
    """Read an instruction file for ``phase``; a bad line is reported, never fatal.

    ``remap``: path prefixes to replace in every file and output directory (the data sit elsewhere
    on the cluster); ``outdir``: put products under this data root instead (same layout).
    """
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}: expected one of {', '.join(PHASES)}")
    tasks, problems, seen = [], [], {}
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                ins = _relocated(Instruction.from_json(line), remap or {}, outdir)
            except CruncherError as exc:
                problems.append(f"line {number}: {exc}")
                _log.error("%s, line %d: not an instruction (%s); skipped", path, number, exc)
                continue
            task, problem = _for_phase(ins, phase)
            if problem:
                problems.append(f"line {number}: {problem}")
            if task is not None and task.id in seen:
                _log.warning("%s, line %d: the same instruction as line %d; done once", path,
                             number, seen[task.id])
            elif task is not None:
                seen[task.id] = number
                tasks.append(task)
    return Loaded(tasks=ordered(tasks), problems=problems)


def ordered(tasks: Iterable[Task]) -> list[Task]:
    """Calibrations first, then the longest sequences first (stable otherwise)."""
    return sorted(tasks, key=lambda t: (t.stage, -t.size))


def cube_of(raw: str, outdir: str) -> str:
    """Where the DRP puts a raw frame's cube: ``<outdir>/<stem>_spdc.fits``."""
    return str(Path(outdir) / f"{stem(raw)}_spdc.fits")


def _for_phase(ins: Instruction, phase: str) -> tuple[Task | None, str]:
    label = _label(ins)
    if ins.mode == "cal":
        return (None, "") if phase == "psfsub" else (Task(ins, _calibration_stage(ins), label), "")
    if phase == "cubes":
        if ins.level == "cube":
            return None, ""
        ins = dataclasses.replace(ins, psfsub=(), quicklook=False, id="")
    elif phase == "psfsub" and ins.level == "raw":
        cubes = tuple(c for c in (cube_of(f, ins.outdir) for f in ins.files) if os.path.exists(c))
        if len(cubes) < 2:
            return None, f"{label}: {len(cubes)} cube(s) found in {ins.outdir}; run --phase cubes"
        ins = dataclasses.replace(ins, files=cubes, level="cube", quicklook=False, id="")
    return Task(ins, SEQUENCES, label), ""


def _calibration_stage(ins: Instruction) -> int:
    """Darks before arcs (an arc's wavelength solution needs its dark): the first file says."""
    from cruncher.instruments.fitsio import read_headers

    try:
        obstype = str(read_headers(ins.files[0])[0].get("OBSTYPE", "")).strip().upper()
    except CruncherError:
        return DARKS            # the backend will say what is wrong with it
    return DARKS if obstype == "DARK" else ARCS


def _relocated(ins: Instruction, remap: Mapping[str, str], outdir: str | None) -> Instruction:
    if not remap and not outdir:
        return ins
    files = tuple(remap_path(f, remap) for f in ins.files)
    target = remap_path(ins.outdir, remap)
    if outdir:      # <root>/calibrations, or <root>/reduced/<Object>/autoreduced/<dataset>
        target = str(Path(outdir, "calibrations") if ins.mode == "cal"
                     else Path(outdir, "reduced", *Path(target).parts[-3:]))
    return dataclasses.replace(ins, files=files, outdir=target, id="")


def _label(ins: Instruction) -> str:
    if ins.mode == "cal":
        return f"calibration {stem(ins.files[-1])} ({len(ins.files)} frame(s))"
    named = " ".join(part for part in (ins.target, ins.band, Path(ins.outdir).name) if part)
    return f"{named} ({len(ins.files)} files)"


class DoneLog:
    """What has ended, one JSON line per task, appended (and flushed) as it ends; ``--resume``
    skips the tasks it says are done (failed ones are tried again)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def done(self) -> set[str]:
        if not self.path.exists():
            return set()
        out: dict[str, str] = {}
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
                out[entry["id"]] = entry["state"]
            except (ValueError, KeyError, TypeError):
                _log.warning("%s: unreadable line skipped: %.80s", self.path, line)
        return {k for k, state in out.items() if state == "done"}

    def append(self, task: Task, state: str, **details) -> None:
        entry = {"id": task.id, "label": task.label, "state": state,
                 "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **details}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as out:
            out.seek(0, os.SEEK_END)
            if out.tell():                # after a line cut short by a kill: start a new one
                out.seek(-1, os.SEEK_END)
                if out.read(1) != b"\n":
                    out.write(b"\n")
            out.write(json.dumps(entry, default=str).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())
