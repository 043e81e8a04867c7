"""The journal: every accepted instruction and every job, in the database's ``jobs`` table.

An instruction is written before it is acknowledged, and every job's state changes are written as
they happen, so a backend killed at any moment and started again resumes all unfinished work and
never redoes finished work. Writes go through one committer thread that groups whatever is
pending into one transaction (group commit): a busy backend pays one commit for many
instructions, and each caller still returns only once its own write is durable.

States: ``accepted`` (an instruction, not yet worked on), ``queued``, ``running``, ``done``,
``failed``. Kinds: ``instruction``, ``recipe``, ``psf``.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import queue
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select

from cruncher.db import queries, schema
from cruncher.db.engine import reading, utcnow, write
from cruncher.messages import Instruction

_log = logging.getLogger(__name__)
FINAL = ("done", "failed")
UNFINISHED = ("accepted", "queued", "running")
BATCH = 500


@dataclass(frozen=True)
class Recorded:
    """What the journal knew of an instruction when it was recorded.

    ``dropped`` are the files left out as marked bad; ``state`` is ``rejected`` (and nothing was
    recorded) when every file was.
    """

    new: bool
    state: str
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Grouped:
    """A write done together with the others of its kind in the batch: ``handler(conn, payloads)``
    returns one result per payload."""

    handler: Callable[[Connection, list[Any]], list[Any]]
    payload: Any


class _Committer(threading.Thread):
    """Runs write functions in batches, one transaction per batch.

    Grouped writes of one kind (instruction records) are handed to their handler all at once, so
    a batch of a hundred instructions costs a few statements, not two hundred.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(name="journal-committer", daemon=True)
        self.engine = engine
        self.pending: queue.Queue = queue.Queue()

    def submit(self, work: Callable[[Connection], Any] | _Grouped) -> cf.Future:
        future: cf.Future = cf.Future()
        self.pending.put((work, future))
        return future

    def stop(self) -> None:
        self.pending.put(None)
        self.join(timeout=10)

    def run(self) -> None:
        while True:
            item = self.pending.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < BATCH:
                try:
                    more = self.pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.pending.put(None)
                    break
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list) -> None:
        try:
            results = write(self.engine, lambda conn: self._run(conn, batch))
        except Exception:
            # One bad write must not sink the others: retry each in a transaction of its own.
            for item in batch:
                future = item[1]
                try:
                    future.set_result(write(self.engine,
                                            lambda conn, item=item: self._run(conn, [item])[0]))
                except Exception as exc:
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results):
            future.set_result(result)

    @staticmethod
    def _run(conn: Connection, batch: list) -> list[Any]:
        results: list[Any] = [None] * len(batch)
        groups: dict[Callable, list[int]] = {}
        for i, (work, _) in enumerate(batch):
            if isinstance(work, _Grouped):
                groups.setdefault(work.handler, []).append(i)
        for handler, indices in groups.items():
            for i, result in zip(indices, handler(conn, [batch[i][0].payload for i in indices])):
                results[i] = result
        for i, (work, _) in enumerate(batch):
            if not isinstance(work, _Grouped):
                results[i] = work(conn)
        return results


# Statements are built once and executed with parameters: building a statement per write (bind
# parameters, cache keys) cost more CPU than the database's own work.
_JOB_BY_ID = schema.jobs.c.id == bindparam("job_id")
_UPDATE = schema.jobs.update().where(_JOB_BY_ID)
_STATE = select(schema.jobs.c.state).where(_JOB_BY_ID)
_STATES = select(schema.jobs.c.id, schema.jobs.c.state).where(
    schema.jobs.c.id.in_(bindparam("ids", expanding=True)))
_HOST = socket.gethostname()
_INSERT_IGNORE: dict[str, Any] = {}


def _insert_ignore(conn: Connection):
    """An INSERT into ``jobs`` that does nothing when the id exists (one statement, no race)."""
    dialect = conn.dialect.name
    if dialect not in _INSERT_IGNORE:
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
            _INSERT_IGNORE[dialect] = insert(schema.jobs).on_conflict_do_nothing()
        elif dialect in ("mysql", "mariadb"):
            _INSERT_IGNORE[dialect] = schema.jobs.insert().prefix_with("IGNORE")
        else:
            from sqlalchemy.dialects.postgresql import insert
            _INSERT_IGNORE[dialect] = insert(schema.jobs).on_conflict_do_nothing()
    return _INSERT_IGNORE[dialect]


def _record_batch(conn: Connection, items: list[tuple[Instruction, bool]]) -> list[Recorded]:
    """Record a batch of instructions: one notes lookup, one existence query, one insert."""
    names = [f for ins, check in items if check for f in ins.files]
    bad = queries.bad_files_in(conn, names) if names else set()
    ids = list({ins.id for ins, _ in items})
    known = dict(conn.execute(_STATES, {"ids": ids}).all()) if ids else {}
    now = utcnow()
    results: list[Recorded] = []
    new_rows: list[dict] = []
    for ins, check in items:
        dropped = tuple(sorted(f for f in ins.files if f in bad)) if check else ()
        if dropped and len(dropped) == len(ins.files):
            results.append(Recorded(new=False, state="rejected", dropped=dropped))
            continue
        payload = json.dumps({"instruction": ins.to_dict(), "dropped": list(dropped)})
        state = known.get(ins.id)
        if state is None:
            known[ins.id] = "accepted"
            new_rows.append(dict(id=ins.id, kind="instruction", key=ins.id, state="accepted",
                                 priority=ins.priority, tries=0, payload=payload,
                                 host=_HOST, created_at=now, updated_at=now))
            results.append(Recorded(new=True, state="accepted", dropped=dropped))
        elif ins.force or state == "failed":
            conn.execute(_UPDATE, {"job_id": ins.id, "state": "accepted", "payload": payload,
                                   "error": None, "updated_at": now, "finished_at": None})
            known[ins.id] = "accepted"
            results.append(Recorded(new=True, state="accepted", dropped=dropped))
        else:
            results.append(Recorded(new=False, state=state, dropped=dropped))
    if new_rows:
        conn.execute(_insert_ignore(conn), new_rows)
    return results


def _add(conn: Connection, *, job_id: str, kind: str, key: str, parent_id: str | None,
         payload: str, priority: int = 0, reset: bool = False) -> str:
    now = utcnow()
    row = dict(id=job_id, kind=kind, key=key, parent_id=parent_id, state="queued",
               priority=priority, tries=0, payload=payload, host=_HOST, created_at=now,
               updated_at=now)
    if conn.execute(_insert_ignore(conn), row).rowcount == 1:
        return "queued"
    if reset:
        conn.execute(_UPDATE, {"job_id": job_id, "state": "queued", "tries": 0, "error": None,
                               "result": None, "payload": payload, "parent_id": parent_id,
                               "updated_at": now, "started_at": None, "finished_at": None})
        return "queued"
    return conn.execute(_STATE, {"job_id": job_id}).scalar()


class Journal:
    """The backend's durable record of work."""

    def __init__(self, engine: Engine, host: str | None = None) -> None:
        self.engine = engine
        self.host = host or socket.gethostname()
        self._committer = _Committer(engine)
        self._committer.start()

    def close(self) -> None:
        self._committer.stop()

    def _write(self, work: Callable[[Connection], Any], timeout: float = 60.0) -> Any:
        return self._committer.submit(work).result(timeout=timeout)

    # --- instructions --------------------------------------------------------------------------

    def record_instruction(self, instruction: Instruction, *, check_bad: bool = True) -> Recorded:
        """Journal an instruction (idempotent); ``force`` re-opens a finished or failed one.

        With ``check_bad``, raw files marked bad in the database are left out, checked in the
        same transaction (and for the whole batch at once).
        """
        return self._committer.submit(_Grouped(_record_batch, (instruction, check_bad))).result(
            timeout=60)

    # --- jobs ----------------------------------------------------------------------------------

    def add_job(self, job_id: str, kind: str, *, key: str, parent_id: str | None,
                payload: str, priority: int = 0, reset: bool = False) -> str:
        """Journal a recipe or PSF job as ``queued`` unless it exists; return its state.

        ``reset`` re-opens an existing job (a forced instruction).
        """
        return self._write(lambda conn: _add(conn, job_id=job_id, kind=kind, key=key,
                                             parent_id=parent_id, payload=payload,
                                             priority=priority, reset=reset))

    def add_jobs(self, jobs: list[dict[str, Any]]) -> list[str]:
        """:meth:`add_job` for many jobs in one transaction (a dataset's whole plan).

        Each dict has the keyword arguments of :meth:`add_job` plus ``job_id`` and ``kind``.
        """
        def work(conn: Connection) -> list[str]:
            return [_add(conn, **job) for job in jobs]

        return self._write(work)

    def set_state(self, job_id: str, state: str, *, error: str | None = None,
                  result: Any = None, tries: int | None = None, wait: bool = True) -> None:
        """Move a job or instruction to ``state``; ``wait=False`` does not wait for the commit."""
        def work(conn: Connection) -> None:
            now = utcnow()
            values: dict[str, Any] = {"job_id": job_id, "state": state, "updated_at": now}
            if state == "running":
                values["started_at"] = now
            if state in FINAL:
                values["finished_at"] = now
            if error is not None:
                values["error"] = error[:4000]
            if result is not None:
                values["result"] = result if isinstance(result, str) else json.dumps(result,
                                                                                     default=str)
            if tries is not None:
                values["tries"] = tries
            conn.execute(_UPDATE, values)

        future = self._committer.submit(work)
        if wait:
            future.result(timeout=60)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every write submitted so far is committed (writes commit in order)."""
        self._committer.submit(lambda conn: None).result(timeout=timeout)

    # --- reading -------------------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any] | None:
        with reading(self.engine) as conn:
            row = conn.execute(select(schema.jobs).where(schema.jobs.c.id == job_id)).mappings().first()
        return dict(row) if row else None

    def states(self, job_ids: Iterable[str]) -> dict[str, str]:
        return queries.job_states(self.engine, job_ids)

    def unfinished(self, kind: str) -> list[dict[str, Any]]:
        jobs = schema.jobs
        query = (select(jobs).where(jobs.c.kind == kind, jobs.c.state.in_(UNFINISHED))
                 .order_by(jobs.c.created_at, jobs.c.id))
        with reading(self.engine) as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def counts(self) -> dict[str, dict[str, int]]:
        jobs = schema.jobs
        query = select(jobs.c.kind, jobs.c.state, func.count()).group_by(jobs.c.kind, jobs.c.state)
        out: dict[str, dict[str, int]] = {}
        with reading(self.engine) as conn:
            for kind, state, n in conn.execute(query):
                out.setdefault(kind, {})[state] = n
        return out

    def recent_failures(self, limit: int = 10) -> list[dict[str, Any]]:
        jobs = schema.jobs
        query = (select(jobs.c.id, jobs.c.kind, jobs.c.error, jobs.c.finished_at)
                 .where(jobs.c.state == "failed").order_by(jobs.c.finished_at.desc()).limit(limit))
        with reading(self.engine) as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
