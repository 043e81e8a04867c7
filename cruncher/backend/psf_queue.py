"""The PSF-subtraction queue: deduplicating, prioritised, dependency-aware, bounded.

A monitor shared by the threads that make PSF-subtraction jobs (the FileProcessor, the reduction
thread) and the worker threads that run them. All of its state sits behind one lock; two
conditions on that lock wake getters (a job may have become runnable) and putters (room was made).

The rules, in the order ``put`` applies them:

- a job whose ``key`` is already *waiting* is refused (``put`` returns False): latency in file
  syncing makes duplicate quicklook jobs, and the waiting one will see the newest cubes anyway. A
  job with the same key that is running or finished does not block a new one. A job whose ``id``
  is already waiting is refused too.
- a job that depends on a job recorded as failed can never run: :class:`DependencyFailed`.
- at most ``capacity`` jobs wait; beyond that ``put`` blocks (back-pressure on the producers) and
  raises :class:`QueueFull` if its timeout expires first.

``get`` hands out the best *runnable* job: every id in its ``depends_on`` marked done with
:meth:`PsfQueue.mark_done`, and ``clock() >= job.not_before`` (a retried job waits out its
back-off). Best means lowest ``priority``, then highest ``rank``, then first put.

Internally each waiting job is in one of three places: *blocked* on dependencies (only in the
``_dependents`` index), *delayed* (a per-family heap on ``not_before``) or *ready* (a per-family
heap on (priority, -rank, seq)). Removal from a heap is lazy: the entry is marked gone and skipped
when it reaches the top, and the heaps are rebuilt when gone entries outnumber live ones.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from cruncher.backend.jobs import FAMILIES, Priority, PsfJob
from cruncher.errors import PermanentError, RetryableError

_log = logging.getLogger(__name__)

# Entry states. An entry sits in at most one heap, the one its state names.
_BLOCKED, _DELAYED, _READY, _GONE = "blocked", "delayed", "ready", "gone"
# Shortest wait for a not-yet-due job: a coarse or stalled clock must not turn the wait into a spin.
_MIN_WAIT_S = 0.001
# Rebuild the heaps only once this many gone entries have piled up (and they outnumber live ones).
_COMPACT_AFTER = 1024


class QueueFull(RetryableError):
    """The queue stayed full for the whole of a ``put``'s timeout; try again later."""


class QueueClosed(PermanentError):
    """The queue is closed (the backend is stopping) and takes no more jobs."""


class DependencyFailed(PermanentError):
    """A job depends on a job that failed, so it can never run.

    Parameters
    ----------
    job_id
        The refused job.
    failed
        The ids of the failed jobs it depends on.
    """

    def __init__(self, job_id: str, failed: Iterable[str]) -> None:
        self.job_id = job_id
        self.failed = tuple(sorted(failed))
        super().__init__(f"job {job_id} depends on failed job(s) {', '.join(self.failed)}")


@dataclass(eq=False, slots=True)
class _Entry:
    """A waiting job with its arrival number and the dependencies it still waits for."""

    job: PsfJob
    seq: int
    pending: set[str] = field(default_factory=set)
    state: str = _BLOCKED

    @property
    def order(self) -> tuple[int, int, int]:
        return (int(self.job.priority), -self.job.rank, self.seq)


class PsfQueue:
    """The PSF-subtraction queue of a processing backend (a thread-safe monitor).

    Parameters
    ----------
    capacity
        How many jobs may wait at once; ``put`` blocks beyond that.
    clock
        The clock ``PsfJob.not_before`` is read against (seconds, monotonic). Timeouts given to
        ``put`` and ``get`` are always real seconds.
    """

    def __init__(self, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._can_get = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._seq = itertools.count()
        self._closed = False
        self._waiting: dict[str, _Entry] = {}
        self._by_key: dict[str, str] = {}
        # dependency id -> ids of waiting jobs listing it (done or not: mark_failed needs both).
        self._dependents: dict[str, set[str]] = {}
        self._ready: dict[str, list[tuple[int, int, int, _Entry]]] = {f: [] for f in FAMILIES}
        self._delayed: dict[str, list[tuple[float, int, _Entry]]] = {f: [] for f in FAMILIES}
        self._gone_in_heaps = 0
        self._depth: Counter[Priority] = Counter()
        # Kept for the life of the queue: a job put later may name any earlier job as a dependency.
        self._done: set[str] = set()
        self._failed: set[str] = set()

    # --- producers ---------------------------------------------------------------------------

    def put(self, job: PsfJob, *, timeout: float | None = None) -> bool:
        """Add a job; False if an equal job (same key, or same id) is already waiting.

        Raises
        ------
        QueueFull
            ``capacity`` jobs stayed waiting for ``timeout`` seconds (None: wait for room forever).
        QueueClosed
            The queue is closed, or was closed while waiting for room.
        DependencyFailed
            ``job.depends_on`` names a job recorded as failed.
        """
        if job.id in job.depends_on:
            raise ValueError(f"job {job.id} depends on itself")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if self._closed:
                    raise QueueClosed(f"the PSF queue is closed; job {job.id} refused")
                duplicate = self._duplicate_of(job)
                if duplicate is not None:
                    self._pass_on_room()
                    break
                failed = self._failed.intersection(job.depends_on)
                if failed:
                    self._pass_on_room()
                    raise DependencyFailed(job.id, failed)
                if len(self._waiting) < self.capacity:
                    self._add(job)
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QueueFull(f"the PSF queue stayed full ({self.capacity} jobs) for "
                                    f"{timeout} s; job {job.id} not queued")
                self._room.wait(remaining)
        if duplicate is not None:
            _log.debug("refused PSF job %s: %s is already waiting", job.id, duplicate)
            return False
        _log.debug("queued PSF job %s (%s, %s, rank %s)", job.id, job.key, job.priority.name, job.rank)
        return True

    def _pass_on_room(self) -> None:
        # A putter leaving without its job may have been the one woken for a free slot.
        if len(self._waiting) < self.capacity:
            self._room.notify()

    def _duplicate_of(self, job: PsfJob) -> str | None:
        """Which waiting job makes ``job`` a duplicate, in words; None if none does."""
        if job.id in self._waiting:
            return f"a job with id {job.id}"
        if job.key in self._by_key:
            return f"job {self._by_key[job.key]} with key {job.key}"
        return None

    def _add(self, job: PsfJob) -> None:
        entry = _Entry(job, next(self._seq), {d for d in job.depends_on if d not in self._done})
        self._waiting[job.id] = entry
        self._by_key[job.key] = job.id
        self._depth[job.priority] += 1
        for dep in job.depends_on:
            self._dependents.setdefault(dep, set()).add(job.id)
        if not entry.pending:
            self._schedule(entry)
        # Wake getters even for a delayed job: they must shorten their wait to its due time.
        self._can_get.notify_all()

    def _schedule(self, entry: _Entry) -> None:
        """Put an entry whose dependencies are all done on its family's delayed or ready heap."""
        family = entry.job.family
        if entry.job.not_before > self._clock():
            entry.state = _DELAYED
            heapq.heappush(self._delayed[family], (entry.job.not_before, entry.seq, entry))
        else:
            entry.state = _READY
            heapq.heappush(self._ready[family], (*entry.order, entry))

    # --- consumers ---------------------------------------------------------------------------

    def get(self, families: Collection[str] | None = None, *,
            timeout: float | None = None) -> PsfJob | None:
        """Take the best runnable job of one of ``families`` (None: any family).

        Blocks until there is one, for at most ``timeout`` seconds (None: no limit; 0: do not
        block). Returns None on timeout, or when the queue is closed and holds nothing runnable
        for the caller.
        """
        wanted = _families(families)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                entry = self._pop_best(wanted)
                if entry is not None:
                    job = entry.job
                    break
                if self._closed:
                    return None
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                due = self._next_due(wanted)
                if due is not None:
                    wait = due if wait is None else min(wait, due)
                self._can_get.wait(wait)
        _log.debug("handing out PSF job %s (%s)", job.id, job.key)
        return job

    def _pop_best(self, families: tuple[str, ...]) -> _Entry | None:
        now = self._clock()
        best: tuple[int, int, int, _Entry] | None = None
        for family in families:
            self._promote_due(family, now)
            ready = self._ready[family]
            while ready and ready[0][-1].state is not _READY:
                heapq.heappop(ready)
                self._gone_in_heaps -= 1
            if ready and (best is None or ready[0] < best):
                best = ready[0]
        if best is None:
            return None
        heapq.heappop(self._ready[best[-1].job.family])
        self._forget(best[-1])
        return best[-1]

    def _promote_due(self, family: str, now: float) -> None:
        delayed = self._delayed[family]
        while delayed and delayed[0][0] <= now:
            _, _, entry = heapq.heappop(delayed)
            if entry.state is _DELAYED:
                entry.state = _READY
                heapq.heappush(self._ready[family], (*entry.order, entry))
            else:
                self._gone_in_heaps -= 1

    def _next_due(self, families: tuple[str, ...]) -> float | None:
        """Seconds until the earliest delayed job of ``families`` is due; None if there is none."""
        due = [self._delayed[f][0][0] for f in families if self._delayed[f]]
        if not due:
            return None
        return max(min(due) - self._clock(), _MIN_WAIT_S)

    def _forget(self, entry: _Entry) -> None:
        """Take an entry out of the waiting set; heaps drop it lazily."""
        job = entry.job
        del self._waiting[job.id]
        if self._by_key.get(job.key) == job.id:
            del self._by_key[job.key]
        self._depth[job.priority] -= 1
        for dep in job.depends_on:
            ids = self._dependents.get(dep)
            if ids is not None:
                ids.discard(job.id)
                if not ids:
                    del self._dependents[dep]
        entry.state = _GONE
        self._room.notify()

    # --- outcomes ----------------------------------------------------------------------------

    def mark_done(self, job_id: str) -> None:
        """Record that a job finished; jobs that depended on it may become runnable."""
        with self._lock:
            self._done.add(job_id)
            self._failed.discard(job_id)
            released = 0
            for dependent in self._dependents.get(job_id, ()):
                entry = self._waiting[dependent]
                if job_id in entry.pending:
                    entry.pending.discard(job_id)
                    if not entry.pending:
                        self._schedule(entry)
                        released += 1
            if released:
                self._can_get.notify_all()
        _log.debug("PSF job %s done; %d dependent job(s) released", job_id, released)

    def mark_failed(self, job_id: str, reason: str = "") -> list[PsfJob]:
        """Record that a job failed; remove and return the waiting jobs that depended on it.

        Dependence is transitive: a job waiting for one of the removed jobs is removed too. The
        returned jobs can never run; the caller records them as failed.
        """
        with self._lock:
            self._done.discard(job_id)
            self._failed.add(job_id)
            dropped: list[_Entry] = []
            frontier = [job_id]
            while frontier:
                for dependent in sorted(self._dependents.get(frontier.pop(), ())):
                    entry = self._waiting[dependent]
                    self._drop(entry)
                    self._failed.add(dependent)
                    dropped.append(entry)
                    frontier.append(dependent)
            self._maybe_compact()
        jobs = [e.job for e in sorted(dropped, key=lambda e: e.seq)]
        _log.log(logging.INFO if jobs else logging.DEBUG, "PSF job %s failed (%s); dropping %d "
                 "dependent job(s) %s", job_id, reason or "no reason given", len(jobs),
                 [j.id for j in jobs[:10]])
        return jobs

    def remove(self, job_id: str) -> bool:
        """Withdraw a waiting job; False if no job with that id is waiting."""
        with self._lock:
            entry = self._waiting.get(job_id)
            if entry is not None:
                self._drop(entry)
                self._maybe_compact()
        if entry is None:
            return False
        _log.debug("removed waiting PSF job %s", job_id)
        return True

    def _drop(self, entry: _Entry) -> None:
        """Forget an entry that has not been handed out, counting it if a heap still holds it."""
        if entry.state in (_DELAYED, _READY):
            self._gone_in_heaps += 1
        self._forget(entry)

    def _maybe_compact(self) -> None:
        if self._gone_in_heaps < max(_COMPACT_AFTER, len(self._waiting)):
            return
        for heaps in (self._ready, self._delayed):
            for family, heap in heaps.items():
                heaps[family] = [item for item in heap if item[-1].state is not _GONE]
                heapq.heapify(heaps[family])
        self._gone_in_heaps = 0

    # --- lifecycle and status ----------------------------------------------------------------

    def close(self) -> None:
        """Refuse new jobs and wake every waiter; getters still drain what is runnable."""
        with self._lock:
            self._closed = True
            self._can_get.notify_all()
            self._room.notify_all()
        _log.debug("PSF queue closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """The number of waiting jobs, runnable or not."""
        with self._lock:
            return len(self._waiting)

    def depths(self) -> dict[str, int]:
        """How many jobs wait at each priority, by priority name (every priority listed)."""
        with self._lock:
            counts = dict(self._depth)
        return {p.name: counts.get(p, 0) for p in Priority}

    def snapshot(self) -> list[dict[str, Any]]:
        """The waiting jobs in run order (runnable ones first), as plain dicts for displays."""
        with self._lock:
            now = self._clock()
            rows = [(entry.order, entry.job, not entry.pending, sorted(entry.pending))
                    for entry in self._waiting.values()]
        # Sorting and formatting 10,000 rows happens outside the lock.
        rows.sort(key=lambda row: (not (row[2] and row[1].not_before <= now), row[0]))
        return [{"id": job.id, "key": job.key, "algorithm": job.algorithm,
                 "priority": job.priority.name, "rank": job.rank, "family": job.family,
                 "runnable": free and job.not_before <= now, "waiting_for": pending,
                 "due_in": max(job.not_before - now, 0.0), "tries": job.tries}
                for _, job, free, pending in rows]


def _families(families: Collection[str] | None) -> tuple[str, ...]:
    if families is None:
        return FAMILIES
    if isinstance(families, str):  # get("cadi") means the family, not its letters
        families = (families,)
    wanted = tuple(dict.fromkeys(families))
    unknown = [f for f in wanted if f not in FAMILIES]
    if unknown or not wanted:
        raise ValueError(f"families must be a non-empty subset of {', '.join(FAMILIES)}, "
                         f"got {list(families)!r}")
    return wanted

