"""Which PSF-subtraction jobs a dataset gets (seed 004, Appendix A.2 and B.1).

For a spectral dataset: two cADI reductions; three KLIP reductions (general, T-dwarf, disk); four
fake-planet injection runs (L and T spectra, the spiral at 0 and 45 deg); one contrast job that
waits for its injections. The general KLIP reduction runs before anyone's other KLIP work, and
fakes and contrast come last, so with several datasets waiting, every dataset's first KLIP is
done early (the paper's realtime promise: a first KLIP ~10 min after a sequence ends).

Job ids are derived from the work (algorithm, dataset, inputs, parameters): the same instruction
sent twice plans the same jobs, which the journal then knows. Quicklook jobs are the exception:
each is new work on whatever cubes exist when it runs, and their shared ``key`` lets the queue
keep only one waiting per dataset.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cruncher.backend.jobs import Priority, PsfJob
from cruncher.messages import Instruction

#: (algorithm, family, priority) per psfsub family named in an instruction.
PLAN: dict[str, tuple[tuple[str, str, Priority], ...]] = {
    "cadi": (("cadi", "cadi", Priority.FIRST), ("cadi_sdi", "cadi", Priority.FIRST)),
    "klip": (("klip_general", "klip", Priority.FIRST), ("klip_tdwarf", "klip", Priority.REDUCTION),
             ("klip_disk", "klip", Priority.REDUCTION)),
    "contrast": (("fakes_L_0", "klip", Priority.CALIBRATION),
                 ("fakes_L_45", "klip", Priority.CALIBRATION),
                 ("fakes_T_0", "klip", Priority.CALIBRATION),
                 ("fakes_T_45", "klip", Priority.CALIBRATION)),
}
CONTRAST = ("contrast", "klip", Priority.CALIBRATION)
QUICKLOOK = ("cadi", "cadi", Priority.QUICKLOOK)
#: The fewest cubes a PSF subtraction is attempted on.
MIN_CUBES = 2


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _params(instruction: Instruction, algorithm: str) -> tuple[str, dict[str, Any]]:
    """The algorithm a job runs and its parameters.

    ``params["test"]`` (a dict) makes every planned job the ``test`` job with those parameters,
    and ``params["test:<algorithm>"]`` overrides them for one algorithm: the backend's machinery
    can then be exercised without the science.
    """
    params = dict(instruction.params)
    test = params.pop("test", None)
    if isinstance(test, Mapping):
        specific = params.get(f"test:{algorithm}")
        return "test", {**test, **(specific if isinstance(specific, Mapping) else {}),
                        "planned": algorithm}
    specific = params.pop(algorithm, {})
    common = {k: v for k, v in params.items() if not isinstance(v, Mapping)}
    return algorithm, {**common, **(specific if isinstance(specific, Mapping) else {})}


def _job(instruction: Instruction, algorithm: str, family: str, priority: Priority,
         cubes: Sequence[str], depends_on: tuple[str, ...] = (),
         defaults: Mapping[str, Any] | None = None) -> PsfJob:
    runs, params = _params(instruction, algorithm)
    params = {**(defaults or {}), **params}
    job_id = f"{algorithm}:{_digest(instruction.outdir, sorted(cubes), runs, params)}"
    return PsfJob(id=job_id, key=job_id, algorithm=runs, family=family, priority=priority,
                  dataset=instruction.outdir, outdir=instruction.outdir, inputs=tuple(cubes),
                  params={**params, "name": algorithm}, instruction_id=instruction.id,
                  rank=instruction.priority, depends_on=depends_on)


def plan_jobs(instruction: Instruction, cubes: Sequence[str], *,
              klip_engine: str | None = None) -> list[PsfJob]:
    """Every job of a full PSF subtraction of ``cubes`` as ``instruction`` asks for.

    ``klip_engine`` (the ``psfsub.engine`` setting) is the KLIP engine of the KLIP reductions and
    injection runs unless the instruction's parameters name one.
    """
    klip_defaults = {"engine": klip_engine} if klip_engine else {}
    if len(cubes) < MIN_CUBES:
        return []
    families = list(instruction.psfsub)
    if "contrast" in families and "klip" not in families:
        families.insert(families.index("contrast"), "klip")   # contrast measures these
    jobs: list[PsfJob] = []
    for family in families:
        for algorithm, queue_family, priority in PLAN[family]:
            defaults = klip_defaults if queue_family == "klip" else None
            jobs.append(_job(instruction, algorithm, queue_family, priority, cubes,
                             defaults=defaults))
        if family == "contrast":
            needed = tuple(j.id for j in jobs if j.params.get("name", "").startswith("fakes_")
                           or j.params.get("name") in ("klip_general", "klip_tdwarf"))
            jobs.append(_job(instruction, *CONTRAST, cubes, depends_on=needed))
    return jobs


def quicklook_job(instruction: Instruction) -> PsfJob:
    """A quicklook cADI of the dataset on the cubes available when it runs."""
    algorithm, family, priority = QUICKLOOK
    runs, params = _params(instruction, algorithm)
    key = f"quicklook:{algorithm}:{instruction.outdir}"
    return PsfJob(id=f"ql:{algorithm}:{_digest(instruction.outdir)}:{time.time_ns()}", key=key,
                  algorithm=runs, family=family, priority=priority, dataset=instruction.outdir,
                  outdir=instruction.outdir, latest_inputs=True,
                  params={**params, "name": algorithm, "quicklook": True},
                  instruction_id=instruction.id, rank=instruction.priority)
