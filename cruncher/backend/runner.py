"""Running one PSF job as a supervised subprocess (what the AST3 daemon does for its tasks).

``python -m cruncher.psfsub JOBFILE`` runs in a session of its own (so its whole process tree can
be killed), with BLAS threads pinned to one, stdout and stderr going to the job's log file, under
a wall-clock limit. The outcome is classified from the exit status: 0 done; 75 retryable; 65
permanent; killed by a signal (a crash, the OOM killer) retryable; past the time limit retryable
(and the tree is killed); a stop of the backend interrupts the job, which is not a failure.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cruncher.backend.jobs import PsfJob
from cruncher.errors import EXIT_PERMANENT, EXIT_RETRYABLE
from cruncher.psfsub.job import JobFile, Result

_log = logging.getLogger(__name__)
KILL_GRACE_S = 2.0
SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "NUMEXPR_NUM_THREADS": "1"}


@dataclass
class Outcome:
    """How one try of a job ended."""

    ok: bool
    retryable: bool = False
    interrupted: bool = False
    reason: str = ""
    result: Result | None = None
    seconds: float = 0.0
    log: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:150]


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:500] if lines else ""


def kill_tree(proc: subprocess.Popen, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace`` seconds.

    The child leads a session of its own, so its group id is its pid, even after it has died.
    """
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            # the leader is gone; its children may not be: finish them off
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


class JobRunner:
    """Runs jobs as subprocesses under ``jobs_dir/<job id>/try<N>/``."""

    def __init__(self, jobs_dir: str | Path, *, default_timeout_s: float = 7200.0) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.default_timeout_s = default_timeout_s

    def run(self, job: PsfJob, inputs: tuple[str, ...], stop: threading.Event) -> Outcome:
        workdir = self.jobs_dir / _safe(job.id) / f"try{job.tries}"
        workdir.mkdir(parents=True, exist_ok=True)
        spec = JobFile(id=job.id, algorithm=job.algorithm, inputs=inputs, outdir=job.outdir,
                       result=str(workdir / "result.json"), params=dict(job.params), tries=job.tries)
        job_file = spec.write(workdir / "job.json")
        log_path = workdir / "job.log"
        timeout = job.timeout_s or self.default_timeout_s
        start = time.monotonic()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "cruncher.psfsub", str(job_file)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**os.environ, **SINGLE_THREADED})
            outcome = self._wait(proc, timeout, stop)
        outcome.seconds = time.monotonic() - start
        outcome.log = str(log_path)
        if outcome.ok:
            try:
                outcome.result = Result.read(spec.result)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                return Outcome(ok=False, reason=f"finished without a readable result: {exc}",
                               seconds=outcome.seconds, log=str(log_path))
        elif not outcome.interrupted and not outcome.reason:
            outcome.reason = _last_line(log_path) or "failed without a message"
        return outcome

    @staticmethod
    def _wait(proc: subprocess.Popen, timeout: float, stop: threading.Event) -> Outcome:
        deadline = time.monotonic() + timeout
        while True:
            try:
                code = proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if stop.is_set():
                kill_tree(proc)
                return Outcome(ok=False, interrupted=True, reason="interrupted by a stop")
            if time.monotonic() > deadline:
                kill_tree(proc)
                return Outcome(ok=False, retryable=True,
                               reason=f"timed out after {timeout:.0f} s; process tree killed")
        if code == 0:
            return Outcome(ok=True)
        if code == EXIT_RETRYABLE:
            return Outcome(ok=False, retryable=True)
        if code == EXIT_PERMANENT:
            return Outcome(ok=False, retryable=False)
        if code < 0:
            kill_tree(proc)   # a crashed leader may leave children behind
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return Outcome(ok=False, retryable=True, reason=f"crashed (killed by {name})")
        return Outcome(ok=False, retryable=False, reason="")
