"""The controlling node of ``super_cruncher``: rank 0 hands a campaign out, one task at a time.

Every rank runs a processing backend: ranks > 0 behind the MPI interface, rank 0 behind the
in-process queue interface (no MPI between the controller and its own backend, so ``-n 1``
works). The controller gives each idle backend the next task (a whole sequence, or a
calibration), dynamically: a backend that finishes gets the next one, longest sequences first, and
no sequence starts before every calibration has ended. Each task's end is appended to the
done-log as it happens, so a job killed by its wall-clock limit is resubmitted with ``--resume``.
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cruncher.instructors.campaign import DoneLog, Task

_log = logging.getLogger(__name__)
IDLE_POLL_S = 0.005


@dataclass
class Rank:
    """One backend as the controller sees it."""

    number: int
    task: Task | None = None
    since: float = 0.0
    busy_s: float = 0.0


@dataclass
class Summary:
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)      # (label, reason)
    skipped: int = 0                                                 # done before (--resume)
    wall_s: float = 0.0
    busy: dict[int, float] = field(default_factory=dict)             # rank -> busy fraction
    dispatch_ms: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        out = [f"super_cruncher: {len(self.done)} done, {len(self.failed)} failed, "
               f"{self.skipped} skipped as done before, in {self.wall_s:.1f} s"]
        out += [f"  failed: {label}: {reason}" for label, reason in self.failed]
        out.append("  busy: " + ", ".join(f"rank {r} {f:.0%}" for r, f in sorted(self.busy.items())))
        if self.dispatch_ms:
            out.append(f"  dispatch at rank 0: median {statistics.median(self.dispatch_ms):.2f} ms"
                       f" per task (max {max(self.dispatch_ms):.2f} ms)")
        return out


class Links:
    """How rank 0 talks to the backends: ``send(rank, text) -> reply``, ``results()``.

    ``local`` is rank 0's own backend (queue interface); ``comm`` the MPI communicator, if any.
    """

    def __init__(self, local, comm=None) -> None:
        self.local, self.comm = local, comm
        self.size = comm.Get_size() if comm is not None else 1
        self._events = local.subscribe() if local is not None else None

    def ranks(self) -> list[int]:
        return ([0] if self.local is not None else []) + list(range(1, self.size))

    def send(self, rank: int, text: str) -> dict[str, Any]:
        if rank == 0:
            return self.local.interface.send(text, timeout=300)
        from cruncher.backend.interfaces.mpi import INSTRUCTION, REPLY

        self.comm.send(text, dest=rank, tag=INSTRUCTION)
        return json.loads(self.comm.recv(source=rank, tag=REPLY))

    def results(self) -> list[tuple[int, dict[str, Any]]]:
        """Finished instructions reported since the last call: (rank, event)."""
        out = []
        while self._events is not None:
            event = self._events.get(timeout=0)
            if event is None:
                break
            if event.type == "finished":
                out.append((0, {"job_id": event.job_id, "state": event.state,
                                "summary": dict(event.summary)}))
        if self.comm is not None:
            from mpi4py import MPI

            from cruncher.backend.interfaces.mpi import RESULT

            status = MPI.Status()
            while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=RESULT, status=status):
                source = status.Get_source()
                out.append((source, json.loads(self.comm.recv(source=source, tag=RESULT))))
        return out

    def shutdown(self) -> None:
        if self.comm is not None:
            from cruncher.backend.interfaces.mpi import INSTRUCTION, REPLY

            for rank in range(1, self.size):
                self.comm.send(json.dumps({"type": "shutdown"}), dest=rank, tag=INSTRUCTION)
                self.comm.recv(source=rank, tag=REPLY)
        if self._events is not None:
            self._events.close()


class Controller:
    """Runs a campaign's tasks over ``links`` to the end."""

    def __init__(self, tasks: list[Task], links: Links, done_log: DoneLog, *,
                 progress: Callable[[str], None] = print) -> None:
        already = done_log.done()
        self.pending = deque(t for t in tasks if t.id not in already)
        self.summary = Summary(skipped=len(tasks) - len(self.pending))
        self.total = len(self.pending)
        self.links, self.done_log, self.progress = links, done_log, progress
        self.ranks = {n: Rank(n) for n in links.ranks()}
        self._by_id: dict[str, Rank] = {}

    def run(self) -> Summary:
        began = time.monotonic()
        if self.summary.skipped:
            self.progress(f"resuming: {self.summary.skipped} task(s) done before are skipped")
        while self.pending or self._by_id:
            acted = self._hand_out()
            for rank, event in self.links.results():
                self._ended(rank, event)
                acted = True
            if not acted:
                time.sleep(IDLE_POLL_S)
        self.summary.wall_s = time.monotonic() - began
        wall = max(self.summary.wall_s, 1e-9)
        self.summary.busy = {n: r.busy_s / wall for n, r in self.ranks.items()}
        return self.summary

    def _hand_out(self) -> bool:
        acted = False
        for rank in self.ranks.values():
            if rank.task is not None or not self.pending:
                continue
            task = self.pending[0]
            if task.stage > 0 and any(r.task is not None and r.task.stage < task.stage
                                      for r in self.ranks.values()):
                break           # the calibrations of the stage before are still running
            self.pending.popleft()
            self._give(rank, task)
            acted = True
        return acted

    def _give(self, rank: Rank, task: Task) -> None:
        began = time.perf_counter()
        reply = self.links.send(rank.number, task.instruction.to_json())
        if reply.get("status") != "accepted":
            self._record(task, "failed", rank.number, reason=reply.get("reason", "rejected"))
        elif reply.get("duplicate") and reply.get("state") in ("done", "failed") \
                and rank.number == 0:     # (ranks > 0 report such duplicates themselves)
            self._record(task, reply["state"], 0, reason="the same instruction twice in the file")
        else:
            rank.task, rank.since = task, time.monotonic()
            self._by_id[task.id] = rank
        self.summary.dispatch_ms.append((time.perf_counter() - began) * 1e3)

    def _ended(self, source: int, event: dict[str, Any]) -> None:
        rank = self._by_id.pop(event.get("job_id", ""), None)
        if rank is None:
            _log.warning("rank %d reported %s, which is not running here", source,
                         event.get("job_id"))
            return
        task, seconds = rank.task, time.monotonic() - rank.since
        rank.task, rank.busy_s = None, rank.busy_s + seconds
        failures = (event.get("summary") or {}).get("failures") or {}
        reason = "; ".join(v if v.startswith(k) else f"{k}: {v}" for k, v in failures.items())
        # a sequence with a failed job lacks products: failed, so that --resume tries it again
        state = "failed" if failures else event.get("state", "failed")
        self._record(task, state, rank.number, seconds=round(seconds, 2), reason=reason[:500])

    def _record(self, task: Task, state: str, rank: int, *, reason: str = "",
                seconds: float | None = None) -> None:
        self.done_log.append(task, state, rank=rank, seconds=seconds, reason=reason or None)
        if state == "done":
            self.summary.done.append(task.label)
        else:
            self.summary.failed.append((task.label, reason or state))
        ended = len(self.summary.done) + len(self.summary.failed)
        timing = f" in {seconds:.1f} s" if seconds is not None else ""
        self.progress(f"[{ended}/{self.total}] {state}: {task.label} (rank {rank}{timing})"
                      + (f": {reason}" if reason else ""))
