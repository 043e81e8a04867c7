"""The FileProcessor: the backbone that turns instructions into work and follows it to the end.

Raw spectral frames become cube recipes (one per frame, shared by every instruction naming the
frame, reduced once); calibration frames become dark-combination and quick-wavecal recipes. A
normal instruction waits until every one of its frames has finished in the DRP, then queues the
dataset's PSF-subtraction jobs on the cubes that succeeded. A quicklook instruction queues a
quicklook cADI at once and again whenever one of its cubes arrives (the queue keeps one waiting
per dataset). Cube-level instructions go straight to the PSF queue. An instruction is finished
when all its work is; the journal records each step, so re-submitting after a restart picks up
exactly what was left.
"""
from __future__ import annotations

import logging
import queue as queue_module
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cruncher.backend.jobs import PsfJob
from cruncher.backend.journal import Journal
from cruncher.backend.planning import MIN_CUBES, plan_jobs, quicklook_job
from cruncher.backend.reduction import RecipeFinished, RecipeRequest
from cruncher.backend.runner import Outcome
from cruncher.errors import CruncherError
from cruncher.instruments.fitsio import read_headers
from cruncher.instruments.gpi import keywords as kw
from cruncher.messages import Failure, Instruction, InstructionFinished, ProductReady
from cruncher.recipes.templates import make_recipe

_log = logging.getLogger(__name__)
CUBE_TEMPLATE = "spectral_science"


class CubeRegistry:
    """The cubes each dataset (output directory) has so far; shared with the worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cubes: dict[str, set[str]] = {}

    def add(self, dataset: str, cube: str) -> None:
        with self._lock:
            self._cubes.setdefault(dataset, set()).add(cube)

    def cubes(self, dataset: str) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._cubes.get(dataset, ())))


@dataclass
class _Frame:
    state: str = "reducing"          # reducing, done, failed
    cube: str | None = None
    reason: str = ""
    waiters: set[str] = field(default_factory=set)


@dataclass
class _Work:
    instruction: Instruction
    frames: list[str] = field(default_factory=list)
    recipes: set[str] = field(default_factory=set)       # calibration recipe names pending
    jobs: set[str] = field(default_factory=set)          # PSF job ids pending
    planned: bool = False
    failures: dict[str, str] = field(default_factory=dict)
    products: int = 0


class FileProcessor(threading.Thread):
    def __init__(self, *, journal: Journal, submit_recipe: Callable[..., None],
                 psf_queue, cubes: CubeRegistry, publish: Callable, calibrations: Path,
                 record_cube: Callable[[str, str], None] | None = None,
                 klip_engine: str | None = None) -> None:
        super().__init__(name="file-processor", daemon=True)
        self.klip_engine = klip_engine
        self.journal = journal
        self.submit_recipe = submit_recipe
        self.psf_queue = psf_queue
        self.cubes = cubes
        self.publish = publish
        self.calibrations = Path(calibrations)
        self.record_cube = record_cube
        self.inbox: queue_module.Queue = queue_module.Queue()
        self.work: dict[str, _Work] = {}
        self.frames: dict[str, _Frame] = {}
        self._by_recipe: dict[str, str] = {}      # calibration recipe name -> instruction id
        #: When each frame's recipe was submitted and its cube became known (for benchmarks).
        self.latencies: list[tuple[str, float, float | None]] = []
        #: Seconds spent planning, journaling and queueing PSF jobs, and how many (benchmarks).
        self.planning = [0.0, 0]

    # --- messages from other threads ------------------------------------------------------------

    def submit(self, instruction: Instruction) -> None:
        self.inbox.put(("instruction", instruction))

    def recipe_finished(self, finished: RecipeFinished) -> None:
        self.inbox.put(("recipe", finished))

    def job_finished(self, job: PsfJob, outcome: Outcome) -> None:
        self.inbox.put(("job", (job, outcome)))

    def stop(self, timeout: float = 5.0) -> None:
        self.inbox.put(("stop", None))
        self.join(timeout=timeout)

    def depth(self) -> int:
        return self.inbox.qsize()

    def run(self) -> None:
        handlers = {"instruction": self._instruction, "recipe": self._recipe, "job": self._job}
        while True:
            what, payload = self.inbox.get()
            if what == "stop":
                return
            try:
                handlers[what](*payload) if what == "job" else handlers[what](payload)
            except Exception as exc:  # one bad item must not stop the backbone
                _log.exception("file processor: %s failed", what)
                if what == "instruction":
                    self._abandon(payload, exc)

    def _abandon(self, ins: Instruction, exc: Exception) -> None:
        """An instruction whose handling raised: failed, said so, never left 'accepted'."""
        self.work.pop(ins.id, None)
        reason = f"internal error: {type(exc).__name__}: {exc}"
        self.journal.set_state(ins.id, "failed", error=reason, wait=False)
        self.journal.flush()
        self.publish(InstructionFinished(job_id=ins.id, state="failed",
                                         summary={"failures": {"backend": reason}}))

    # --- instructions -------------------------------------------------------------------------

    def _instruction(self, ins: Instruction) -> None:
        if ins.id in self.work:
            return
        work = self.work[ins.id] = _Work(instruction=ins)
        if ins.level == "cube":
            for cube in ins.files:
                self.cubes.add(ins.outdir, cube)
            self._queue_psf(work, list(ins.files))
        elif ins.mode == "cal":
            self._calibrations(work)
        else:
            self._frames(work)
        self._maybe_finish(work)

    def _frames(self, work: _Work) -> None:
        ins = work.instruction
        for raw in ins.files:
            work.frames.append(raw)
            frame = self.frames.get(raw)
            if frame is None or (ins.force and frame.state != "reducing"):
                frame = self.frames[raw] = self._start_frame(raw, ins)
            frame.waiters.add(ins.id)
        if ins.quicklook:
            self._quicklook(work)
        self._after_frames(work)

    def _start_frame(self, raw: str, ins: Instruction) -> _Frame:
        stem = kw.stem(raw)
        job_id = f"recipe:{CUBE_TEMPLATE}:{stem}"
        existing = self.journal.get(job_id)
        if existing is not None and not ins.force and existing["state"] == "done":
            cube = _cube_from(existing)
            if cube and Path(cube).exists():
                self.cubes.add(ins.outdir, cube)
                return _Frame(state="done", cube=cube)
        if existing is not None and not ins.force and existing["state"] == "failed":
            return _Frame(state="failed", reason=existing.get("error") or "failed earlier")
        attempt = 0 if existing is None else (existing["tries"] or 0) + (1 if ins.force else 0)
        recipe = make_recipe(CUBE_TEMPLATE, [raw], ins.outdir)
        name = f"c_{stem}" + (f"_r{attempt}" if attempt else "")
        self.journal.add_job(job_id, "recipe", key=name, parent_id=ins.id, payload=recipe.to_xml(),
                             reset=ins.force)
        if attempt:
            self.journal.set_state(job_id, "queued", tries=attempt, wait=False)
        request = RecipeRequest(name=name, recipe=recipe, kind="cube", raw=(raw,),
                                journal_id=job_id)
        self.latencies.append((raw, request.submitted, None))
        self.submit_recipe(request)
        return _Frame()

    def _calibrations(self, work: _Work) -> None:
        ins = work.instruction
        darks: dict[float, list[str]] = {}
        requests: list[RecipeRequest | None] = []
        for raw in ins.files:
            try:
                headers = read_headers(raw)
            except CruncherError as exc:
                work.failures[raw] = str(exc)
                continue
            obstype = str(headers[0].get("OBSTYPE", "")).strip().upper()
            itime = headers[1].get("ITIME", headers[0].get("ITIME")) if len(headers) > 1 else None
            if obstype == "DARK" and itime is not None:
                darks.setdefault(round(float(itime), 3), []).append(raw)
            elif obstype == "ARC":
                requests.append(self._calibration_recipe(work, "quick_wavecal", "b_qwc", [raw],
                                                         "arc"))
            else:
                work.failures[raw] = f"not handled: OBSTYPE {obstype or '?'} in calibration mode"
                _log.warning("%s: not handled (OBSTYPE %s)", raw, obstype, extra={"path": raw})
        for frames in darks.values():
            requests.append(self._calibration_recipe(work, "dark", "a_dark", sorted(frames), "dark"))
        # together, so that the reduction thread holds each arc back for its dark
        ready = [r for r in requests if r is not None]
        if ready:
            self.submit_recipe(*ready)

    def _calibration_recipe(self, work: _Work, template: str, prefix: str, raws: list[str],
                            kind: str) -> RecipeRequest | None:
        """Journal a calibration recipe and return it to submit (None: already done)."""
        stem = kw.stem(raws[-1])
        job_id = f"recipe:{template}:{stem}"
        existing = self.journal.get(job_id)
        if existing is not None and existing["state"] in ("done", "failed") \
                and not work.instruction.force:
            return None
        attempt = 0 if existing is None else (existing["tries"] or 0) + 1
        name = f"{prefix}_{stem}" + (f"_r{attempt}" if attempt else "")
        recipe = make_recipe(template, raws, self.calibrations)
        self.journal.add_job(job_id, "recipe", key=name, parent_id=work.instruction.id,
                             payload=recipe.to_xml(), reset=existing is not None)
        if attempt:
            self.journal.set_state(job_id, "queued", tries=attempt, wait=False)
        work.recipes.add(name)
        self._by_recipe[name] = work.instruction.id
        return RecipeRequest(name=name, recipe=recipe, kind=kind, raw=tuple(raws), journal_id=job_id)

    # --- outcomes -----------------------------------------------------------------------------

    def _recipe(self, finished: RecipeFinished) -> None:
        request = finished.request
        if request.kind != "cube":
            owner = self.work.get(self._by_recipe.pop(request.name, ""))
            if not finished.ok:         # the frames that need this calibration will fail too
                self.publish(Failure(job_id=request.journal_id, stage="drp",
                                     reason=f"{request.kind} recipe {request.name}: "
                                            f"{finished.reason or 'failed'}",
                                     files=tuple(request.raw)))
            if owner is not None:
                owner.recipes.discard(request.name)
                if not finished.ok:
                    owner.failures[request.name] = finished.reason
                owner.products += len(finished.products)
                self._maybe_finish(owner)
            return
        raw = request.raw[0]
        frame = self.frames.setdefault(raw, _Frame())
        cube = next((p for p in finished.products if p.endswith("_spdc.fits")), None)
        if finished.ok and cube:
            frame.state, frame.cube = "done", cube
            self.cubes.add(request.recipe.output_dir, cube)
            self._note_latency(raw, finished.known_at)
            if self.record_cube is not None:
                self.record_cube(cube, raw)
            self.publish(ProductReady(job_id=request.journal_id, kind="spdc", path=cube,
                                      inputs=(raw,)))
        else:
            frame.state = "failed"
            frame.reason = finished.reason or "no cube was written"
            self.publish(Failure(job_id=request.journal_id, stage="drp", reason=frame.reason,
                                 files=(raw,)))
        for ins_id in list(frame.waiters):
            work = self.work.get(ins_id)
            if work is None:
                continue
            if work.instruction.quicklook and frame.state == "done":
                self._quicklook(work)
            self._after_frames(work)

    def _note_latency(self, raw: str, known_at: float) -> None:
        for i in range(len(self.latencies) - 1, -1, -1):
            if self.latencies[i][0] == raw and self.latencies[i][2] is None:
                self.latencies[i] = (raw, self.latencies[i][1], known_at)
                return

    def _job(self, job: PsfJob, outcome: Outcome) -> None:
        work = self.work.get(job.instruction_id or "")
        if work is None:
            return
        work.jobs.discard(job.id)
        if outcome.ok and outcome.result is not None:
            work.products += len(outcome.result.products)
        elif not outcome.ok:
            work.failures[job.id] = outcome.reason
        self._maybe_finish(work)

    # --- PSF subtraction ---------------------------------------------------------------------

    def _after_frames(self, work: _Work) -> None:
        """When every frame of a normal instruction has finished, plan its PSF subtraction."""
        if work.instruction.quicklook or work.planned:
            self._maybe_finish(work)
            return
        states = [self.frames[raw] for raw in work.frames]
        if any(f.state == "reducing" for f in states):
            return
        for raw, frame in zip(work.frames, states):
            if frame.state == "failed":
                work.failures[raw] = frame.reason
        self._queue_psf(work, [f.cube for f in states if f.state == "done" and f.cube])
        self._maybe_finish(work)

    def _queue_psf(self, work: _Work, cubes: list[str]) -> None:
        began = time.perf_counter()
        try:
            self._plan_and_queue(work, cubes)
        finally:
            self.planning[0] += time.perf_counter() - began

    def _plan_and_queue(self, work: _Work, cubes: list[str]) -> None:
        work.planned = True
        ins = work.instruction
        if ins.quicklook:
            self._quicklook(work)
            return
        if ins.psfsub and len(cubes) < MIN_CUBES:
            work.failures["psfsub"] = f"{len(cubes)} cube(s): too few for PSF subtraction"
        jobs = plan_jobs(ins, cubes, klip_engine=self.klip_engine)
        states = self.journal.add_jobs([
            dict(job_id=job.id, kind="psf", key=job.key, parent_id=ins.id, payload=job.to_json(),
                 priority=int(job.priority), reset=ins.force) for job in jobs])
        for job, state in zip(jobs, states):
            if state == "done":
                if self.psf_queue is not None:
                    self.psf_queue.mark_done(job.id)
                continue
            if state == "failed":
                work.failures[job.id] = "failed earlier"
                continue
            work.jobs.add(job.id)
            self.planning[1] += 1
            if not self.psf_queue.put(job):
                work.jobs.discard(job.id)   # the same work is already waiting

    def _quicklook(self, work: _Work) -> None:
        ins = work.instruction
        if "cadi" not in ins.psfsub or len(self.cubes.cubes(ins.outdir)) < MIN_CUBES:
            return
        job = quicklook_job(ins)
        self.journal.add_job(job.id, "psf", key=job.key, parent_id=ins.id, payload=job.to_json(),
                             priority=int(job.priority))
        if not self.psf_queue.put(job):
            # the quicklook already waiting for this dataset will run on the newest cubes
            self.journal.set_state(job.id, "done", result={"merged": "into the waiting quicklook"},
                                   wait=False)

    def _maybe_finish(self, work: _Work) -> None:
        ins = work.instruction
        if self.work.get(ins.id) is not work or work.recipes or work.jobs:
            return      # finished already (several paths lead here), or still busy
        if ins.level == "raw" and ins.mode != "cal":
            if any(self.frames[raw].state == "reducing" for raw in work.frames):
                return
            if not ins.quicklook and not work.planned:
                return
        cubes = sum(1 for raw in work.frames if self.frames[raw].state == "done")
        nothing = (ins.level == "raw" and ins.mode != "cal" and cubes == 0) or (
            ins.mode == "cal" and work.failures and not work.products)
        state = "failed" if nothing else "done"
        summary = {"cubes": cubes, "products": work.products, "failures": work.failures}
        self.journal.set_state(ins.id, state, result=summary,
                               error="; ".join(f"{k}: {v}" for k, v in work.failures.items())[:2000]
                               or None, wait=False)
        _log.info("instruction %s %s: %d cubes, %d products, %d failures", ins.id, state, cubes,
                  work.products, len(work.failures))
        for raw in work.frames:
            frame = self.frames.get(raw)
            if frame is not None:
                frame.waiters.discard(ins.id)
        del self.work[ins.id]
        self.journal.flush()    # whoever hears "finished" must find the journal saying so
        self.publish(InstructionFinished(job_id=ins.id, state=state, summary=summary))


def _cube_from(row: dict) -> str | None:
    import json

    try:
        products = json.loads(row.get("result") or "{}").get("products", [])
    except ValueError:
        return None
    return next((p for p in products if p.endswith("_spdc.fits")), None)
