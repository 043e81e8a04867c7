"""The processing backend: start its threads, accept instructions, report status, stop cleanly.

Accepting an instruction (any interface) means: validate it; refuse paths outside the data roots
or missing files; leave out raw files marked bad in the database (the reply lists them); journal
it; hand it to the FileProcessor; reply. Only then is it acknowledged, so nothing accepted is
lost. On start, every unfinished instruction in the journal is handed to the FileProcessor again;
the journal's record of each recipe and job makes that pick up exactly where work stopped.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

from astropy.io import fits

from cruncher.backend.drp_supervisor import DrpSupervisor
from cruncher.backend.events import EventBus, Subscription
from cruncher.backend.file_processor import CubeRegistry, FileProcessor
from cruncher.backend.jobs import PsfJob
from cruncher.backend.journal import Journal
from cruncher.backend.psf_queue import PsfQueue
from cruncher.backend.reduction import ReductionThread
from cruncher.backend.runner import JobRunner, Outcome
from cruncher.backend.workers import WorkerPool
from cruncher.config import Settings
from cruncher.db import engine as dbengine
from cruncher.db.announced import record_announced, record_cube
from cruncher.drp.worker import WorkerConfig
from cruncher.errors import CruncherError, OutsideDataRootError
from cruncher.messages import Failure, Instruction, InstructionError, ProductReady, Reply

_log = logging.getLogger(__name__)


class Backend:
    """One processing backend (one per machine)."""

    def __init__(self, settings: Settings, *, interface: str | None = None,
                 drp_mode: str | None = None) -> None:
        self.settings = settings
        self.interface_name = interface or settings.backend.interface
        self.drp_mode = drp_mode or settings.drp.mode
        self.started_at: float | None = None
        self.interface = None
        self._stopping = threading.Event()
        self._stopped = threading.Event()

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> Backend:
        s = self.settings
        s.make_dirs()
        dbengine.ensure_database(s.database.url)
        self.engine = dbengine.make_engine(s.database.url)
        dbengine.init_db(self.engine)
        self.journal = Journal(self.engine)
        self.events = EventBus()
        self.psf_queue = PsfQueue(capacity=s.psfsub.queue_size)
        self.cubes = CubeRegistry()
        self.supervisor = None
        if self.drp_mode == "builtin":
            config = WorkerConfig(queue_dir=Path(s.paths.queue), calibrations=Path(s.paths.calibrations),
                                  log_dir=Path(s.paths.logs), poll_s=s.drp.poll_interval_s,
                                  array=s.compute.array)
            self.supervisor = DrpSupervisor(config, s.drp.workers, data_root=s.paths.root)
            self.supervisor.start()
        self.reduction = ReductionThread(Path(s.paths.queue), Path(s.paths.logs), journal=self.journal,
                                         notify=lambda f: self.file_processor.recipe_finished(f),
                                         timeout_s=s.drp.recipe_timeout_s,
                                         max_requeues=s.drp.max_requeues, supervisor=self.supervisor)
        self.file_processor = FileProcessor(journal=self.journal, submit_recipe=self.reduction.submit,
                                            psf_queue=self.psf_queue, cubes=self.cubes,
                                            publish=self.events.publish,
                                            calibrations=Path(s.paths.calibrations),
                                            record_cube=self._record_cube,
                                            klip_engine=s.psfsub.engine)
        runner = JobRunner(Path(s.paths.logs) / "jobs", default_timeout_s=s.psfsub.job_timeout_s)
        self.workers = WorkerPool(psf_queue=self.psf_queue, journal=self.journal, runner=runner,
                                  on_finished=self._job_finished, resolve_inputs=self._inputs,
                                  threads={"cadi": s.psfsub.cadi_workers,
                                           "klip": s.psfsub.klip_workers},
                                  max_tries=s.psfsub.max_tries, backoff_s=s.psfsub.retry_backoff_s)
        self.reduction.start()
        self.file_processor.start()
        self.workers.start()
        self._resume()
        self.interface = self._make_interface()
        self.interface.start()
        self.started_at = time.monotonic()
        _log.info("backend started: interface %s, DRP %s, database %s", self.interface_name,
                  self.drp_mode, self.engine.url.render_as_string(hide_password=True))
        return self

    def _make_interface(self):
        b = self.settings.backend
        if self.interface_name == "websocket":
            from cruncher.backend.interfaces.websocket import WebSocketInterface

            # Handlers spend most of their time waiting for the journal's group commit; many of
            # them in flight make the commit batches (and the throughput) large.
            return WebSocketInterface(self, host=b.host, port=b.port, token=b.token,
                                      tls_cert=b.tls_cert, tls_key=b.tls_key,
                                      max_message_bytes=b.max_message_bytes, workers=32)
        if self.interface_name == "mpi":
            from cruncher.backend.interfaces.mpi import MpiInterface

            return MpiInterface(self, on_shutdown=self.stop, max_message_bytes=b.max_message_bytes)
        from cruncher.backend.interfaces.inproc import QueueInterface

        return QueueInterface(self, max_message_bytes=b.max_message_bytes)

    def stop(self, timeout: float = 9.0) -> None:
        """Stop accepting, interrupt running jobs (they resume later), stop the DRP workers."""
        if self._stopping.is_set():
            self._stopped.wait(timeout)
            return
        self._stopping.set()
        deadline = time.monotonic() + timeout
        _log.info("backend stopping")
        if self.interface is not None:
            self.interface.stop(timeout=2)
        stoppers = [threading.Thread(target=self.workers.stop, args=(5,)),
                    threading.Thread(target=self.supervisor.stop, args=(5,))
                    if self.supervisor is not None else None]
        for thread in filter(None, stoppers):
            thread.start()
        for thread in filter(None, stoppers):
            thread.join(timeout=max(0.1, deadline - time.monotonic() - 1))
        self.file_processor.stop(timeout=1)
        self.reduction.stop(timeout=1)
        self.psf_queue.close()
        self.events.close()
        self.journal.close()
        self._stopped.set()
        _log.info("backend stopped")

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def _resume(self) -> None:
        pending = self.journal.unfinished("instruction")
        for row in pending:
            try:
                payload = json.loads(row["payload"])
                ins = Instruction.from_dict(payload["instruction"])
                dropped = set(payload.get("dropped", []))
                files = tuple(f for f in ins.files if f not in dropped)
                self.file_processor.submit(dataclasses.replace(ins, files=files))
            except (ValueError, KeyError, CruncherError) as exc:
                self.journal.set_state(row["id"], "failed", error=f"cannot resume: {exc}")
        if pending:
            _log.info("resuming %d unfinished instructions from the journal", len(pending))

    # --- the gateway (what the interfaces call) --------------------------------------------------

    def handle(self, data: dict[str, Any]) -> Reply:
        try:
            ins = Instruction.from_dict(data)
        except InstructionError as exc:
            return Reply(status="rejected", reason=str(exc),
                         instruction_id=data.get("id") if isinstance(data.get("id"), str) else None)
        if self._stopping.is_set():
            return Reply(status="rejected", instruction_id=ins.id, reason="the backend is stopping")
        problem = self._check_files(ins)
        if problem:
            _log.warning("rejected instruction %s: %s", ins.id, problem)
            return Reply(status="rejected", instruction_id=ins.id, reason=problem)
        recorded = self.journal.record_instruction(ins, check_bad=ins.level == "raw")
        dropped = recorded.dropped
        if recorded.state == "rejected":
            return Reply(status="rejected", instruction_id=ins.id, dropped=dropped,
                         reason="every file is marked bad in the database")
        if not recorded.new:
            return Reply(status="accepted", instruction_id=ins.id, job_id=ins.id, duplicate=True,
                         state=recorded.state, reason=f"already {recorded.state}")
        if dropped:
            _log.info("instruction %s: left out %d bad files", ins.id, len(dropped),
                      extra={"dropped": ",".join(dropped)})
            ins = dataclasses.replace(ins, files=tuple(f for f in ins.files if f not in dropped))
        self.file_processor.submit(ins)
        return Reply(status="accepted", instruction_id=ins.id, job_id=ins.id, dropped=dropped,
                     state="accepted")

    def _check_files(self, ins: Instruction) -> str | None:
        if ins.mode == "pol":
            return "mode: polarimetry is not supported yet"
        missing = []
        try:
            self.settings.check_in_roots(ins.outdir)
            for path in ins.files:
                try:
                    # one lstat tells both whether it exists and whether it is a link
                    link = stat.S_ISLNK(os.lstat(path).st_mode)
                except FileNotFoundError:
                    missing.append(path)
                    continue
                if link and not os.path.exists(path):      # a link to nothing
                    missing.append(path)
                    continue
                self.settings.check_in_roots(path, is_link=link)
        except OutsideDataRootError as exc:
            return str(exc)
        if missing:
            return f"no such file: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                     if len(missing) > 1 else "")
        return None

    def status(self) -> dict[str, Any]:
        counts = self.journal.counts()
        return {
            "host": socket.gethostname(),
            "uptime_s": round(time.monotonic() - (self.started_at or time.monotonic()), 1),
            "interface": self.interface_name,
            "instructions": counts.get("instruction", {}),
            "jobs": {k: v for k, v in counts.items() if k != "instruction"},
            "file_processor": {"inbox": self.file_processor.depth(),
                               "in_progress": len(self.file_processor.work)},
            "reduction": self.reduction.status(),
            "psf_queue": {"waiting": len(self.psf_queue), "by_priority": self.psf_queue.depths()},
            "running": self.workers.running(),
            "drp_workers": self.supervisor.status() if self.supervisor else "external",
            "recent_failures": [{"id": e.job_id, "stage": e.stage, "reason": e.reason,
                                 "time": e.time} for e in list(self.events.recent_failures)[-10:]],
        }

    def subscribe(self) -> Subscription:
        return self.events.subscribe()

    # --- results ---------------------------------------------------------------------------------

    def _inputs(self, job: PsfJob) -> tuple[str, ...]:
        return self.cubes.cubes(job.dataset) if job.latest_inputs else job.inputs

    def _record_cube(self, cube: str, raw: str) -> None:
        try:
            record_cube(self.engine, cube, raw)
        except (OSError, CruncherError) as exc:
            _log.warning("could not record cube %s: %s", cube, exc)
        except Exception:   # the frame's instructions must go on: the cube exists
            _log.exception("could not record cube %s", cube)

    def _job_finished(self, job: PsfJob, outcome: Outcome) -> None:
        if outcome.ok and outcome.result is not None:
            cubes = self._inputs(job)
            raws = _raw_inputs(cubes)
            about = _dataset_of(cubes[0]) if cubes else {}
            for product in outcome.result.products:
                event = ProductReady(
                    job_id=job.id, kind=product.kind, path=product.path, grade=product.grade,
                    inputs=tuple(raws), target=about.get("target"), band=about.get("band"),
                    mode="spec", date=about.get("date"), extras=product.extras)
                try:
                    record_announced(self.engine, event, params=dict(job.params))
                except CruncherError as exc:
                    _log.warning("could not record %s: %s", product.path, exc)
                except Exception:   # logged with its traceback; the product is announced below
                    _log.exception("could not record %s", product.path)
                self.events.publish(event)
        elif not outcome.ok:
            self.events.publish(Failure(job_id=job.id, stage="psfsub", reason=outcome.reason,
                                        sequence=job.dataset))
        self.file_processor.job_finished(job, outcome)


def _raw_inputs(cubes: tuple[str, ...]) -> list[str]:
    """The raw frames behind ``cubes``, for raw2reduced links."""
    return [_raw_of(cube) for cube in cubes]


@functools.lru_cache(maxsize=1000)
def _dataset_of(cube: str) -> dict:
    """Target, band and date of the dataset a cube belongs to (read once per cube)."""
    from cruncher.instruments.gpi.keywords import band_from_filter

    try:
        header = fits.getheader(cube)
    except OSError:
        return {}
    return {"target": header.get("OBJECT"), "band": band_from_filter(header.get("IFSFILT")),
            "date": str(header.get("DATE-OBS", ""))[:10] or None}


@functools.lru_cache(maxsize=20_000)
def _raw_of(cube: str) -> str:
    """A cube's raw frame (its DATAFILE keyword); each cube's header is read once."""
    try:
        return fits.getheader(cube).get("DATAFILE") or Path(cube).name
    except OSError:
        return Path(cube).name
