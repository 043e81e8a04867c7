"""Worker threads: take PSF jobs from the queue and run them as supervised subprocesses.

Each algorithm family (cADI, KLIP) has its own threads, so a long KLIP never delays a quicklook.
A job that fails in a retryable way goes back to the queue with exponential backoff until
``max_tries``; a permanent failure, or the last try, fails it and every job waiting on it. A
backend stop interrupts running jobs; they go back to ``queued`` in the journal and run again
after a restart.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from cruncher.backend.jobs import PsfJob
from cruncher.backend.journal import Journal
from cruncher.backend.runner import JobRunner, Outcome

_log = logging.getLogger(__name__)


class WorkerPool:
    """The worker threads of a backend."""

    def __init__(self, *, psf_queue, journal: Journal, runner: JobRunner,
                 on_finished: Callable[[PsfJob, Outcome], None],
                 resolve_inputs: Callable[[PsfJob], tuple[str, ...]],
                 threads: dict[str, int], max_tries: int = 3, backoff_s: float = 10.0) -> None:
        self.queue = psf_queue
        self.journal = journal
        self.runner = runner
        self.on_finished = on_finished
        self.resolve_inputs = resolve_inputs
        self.threads_per_family = threads
        self.max_tries = max_tries
        self.backoff_s = backoff_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running: dict[str, tuple[PsfJob, float]] = {}
        #: Seconds each job spent in scheduling, outside its subprocess (for the benchmarks).
        self.overheads: collections.deque[float] = collections.deque(maxlen=10_000)

    def start(self) -> None:
        for family, count in self.threads_per_family.items():
            for i in range(count):
                thread = threading.Thread(target=self._loop, args=(family,), daemon=True,
                                          name=f"psf-{family}-{i + 1}")
                thread.start()
                self._threads.append(thread)

    def stop(self, timeout: float = 8.0) -> None:
        """Interrupt running jobs (they will run again) and end the threads."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))

    def running(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            return [{"id": job.id, "algorithm": job.algorithm, "dataset": job.dataset,
                     "try": job.tries + 1, "age_s": round(now - start, 1)}
                    for job, start in self._running.values()]

    def _loop(self, family: str) -> None:
        while not self._stop.is_set():
            job = self.queue.get([family], timeout=0.25)
            if job is None:
                continue
            try:
                self._run(job)
            except Exception:  # a thread must outlive anything one job does to it
                _log.exception("worker: job %s failed unexpectedly", job.id)
                self._fail(job, Outcome(ok=False, reason="internal error in the worker"))

    def _run(self, job: PsfJob) -> None:
        began = time.perf_counter()
        inputs = self.resolve_inputs(job)
        self.journal.set_state(job.id, "running", tries=job.tries, wait=False)
        with self._lock:
            self._running[job.id] = (job, time.monotonic())
        try:
            outcome = self.runner.run(job, inputs, self._stop)
        finally:
            with self._lock:
                self._running.pop(job.id, None)
        if outcome.interrupted:
            self.journal.set_state(job.id, "queued", error="interrupted by a stop")
            return
        if outcome.ok:
            self.journal.set_state(job.id, "done", result=_summary(outcome), wait=False)
            self.queue.mark_done(job.id)
            self._announce(job, outcome)
        elif outcome.retryable and job.tries + 1 < self.max_tries:
            self._retry(job, outcome)
        else:
            self._fail(job, outcome)
        self.overheads.append(time.perf_counter() - began - outcome.seconds)

    def _announce(self, job: PsfJob, outcome: Outcome) -> None:
        """Pass a finished job on; the job stays done whatever its follow-up does."""
        try:
            self.on_finished(job, outcome)
        except Exception:
            _log.exception("job %s: done, but passing on its products failed", job.id)

    def _retry(self, job: PsfJob, outcome: Outcome) -> None:
        delay = self.backoff_s * 2 ** job.tries
        _log.warning("job %s: %s; try %d of %d in %.0f s", job.id, outcome.reason,
                     job.tries + 2, self.max_tries, delay)
        self.journal.set_state(job.id, "queued", error=outcome.reason, tries=job.tries + 1,
                               wait=False)
        self.queue.put(job.retried(time.monotonic() + delay))

    def _fail(self, job: PsfJob, outcome: Outcome) -> None:
        _log.error("job %s failed: %s", job.id, outcome.reason, extra={"job": job.id})
        self.journal.set_state(job.id, "failed", error=outcome.reason or "failed", wait=False)
        self.on_finished(job, outcome)
        for dependent in self.queue.mark_failed(job.id, outcome.reason):
            reason = f"needed {job.id}, which failed"
            self.journal.set_state(dependent.id, "failed", error=reason, wait=False)
            self.on_finished(dependent, Outcome(ok=False, reason=reason))


def _summary(outcome: Outcome) -> dict[str, Any]:
    result = outcome.result
    return {"seconds": round(outcome.seconds, 3), "log": outcome.log,
            "products": [p.path for p in result.products] if result else [],
            "timings": result.timings if result else {}}
