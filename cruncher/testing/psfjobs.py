"""Running PSF-subtraction jobs from tests exactly as the backend runs them."""
from __future__ import annotations

import threading
from pathlib import Path

from cruncher.backend.jobs import Priority, PsfJob
from cruncher.backend.runner import JobRunner
from cruncher.psfsub.job import JobFile, Result


def run_job(spec: JobFile, timeout_s: float = 900) -> Result:
    """Run a job through the backend's JobRunner: a process of its own with BLAS pinned to one
    thread (KLIP engines fork worker pools, which is not safe from a threaded process such as
    pytest). Fails the test with the job's reason and log if it does not succeed."""
    job = PsfJob(id=spec.id, key=spec.id, algorithm=spec.algorithm, family="klip",
                 priority=Priority.FIRST, dataset=spec.outdir, outdir=spec.outdir,
                 inputs=spec.inputs, params=spec.params, timeout_s=timeout_s)
    outcome = JobRunner(Path(spec.result).parent / "jobs").run(job, job.inputs, threading.Event())
    assert outcome.ok, (outcome.reason, outcome.log)
    return outcome.result
