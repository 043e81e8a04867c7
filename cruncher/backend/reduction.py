"""The reduction thread: recipes into the DRP queue, outcomes back to the FileProcessor.

Recipes are written into the queue directory atomically, following the GPI protocol, and their
state renames are followed with watchdog (a rename arrives as a *moved* event) and a periodic scan
that catches anything an event missed. A finished recipe's products come from the DRP log
(``File output to: PATH``), or, for a DRP that does not tag its log lines, from the names the
recipe's products must have.

Recipes run in stages: darks, then quick wavecals (an arc needs its dark), then cubes (they need
both). A recipe is held back while any recipe of an earlier stage is unfinished: several DRP
workers run a queue in parallel, and a cube reduced before its night's dark exists would fail; a
recipe of a later stage still waiting in the queue when an earlier one arrives is withdrawn and
held too. A recipe stuck in ``.working.xml`` (a DRP that hung, a worker that died) is re-queued
when its worker is gone or after ``timeout_s``, at most ``max_requeues`` times, then failed.
"""
from __future__ import annotations

import logging
import queue as queue_module
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cruncher.backend.drp_supervisor import DrpSupervisor, pid_alive
from cruncher.backend.journal import Journal
from cruncher.drp.drplog import LogFollower
from cruncher.instruments.gpi.keywords import stem
from cruncher.recipes import queue
from cruncher.recipes.recipe import Recipe

_log = logging.getLogger(__name__)
#: The order recipes must run in: a recipe waits for every unfinished one of an earlier stage.
STAGES = {"dark": 0, "arc": 1, "cube": 2}
#: How the DRP says a recipe lacked a calibration (``MissingCalibrationError``).
MISSING_CALIBRATION = re.compile(r"\bno [\w -]*calibration\b")
#: Product name suffix by template ShortName, for DRPs whose log lines carry no recipe name.
EXPECTED_SUFFIX = {"spdc": "spdc", "quickcube": "spdc", "dark": "dark", "quickwavecal": "wavecal"}


@dataclass(frozen=True)
class RecipeRequest:
    """A recipe the FileProcessor wants run."""

    name: str
    recipe: Recipe
    kind: str                   # "dark", "arc" or "cube" (see STAGES)
    raw: tuple[str, ...]
    journal_id: str
    submitted: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class RecipeFinished:
    """A recipe's outcome, for the FileProcessor."""

    request: RecipeRequest
    ok: bool
    products: tuple[str, ...] = ()
    reason: str = ""
    drp_seconds: float | None = None
    known_at: float = field(default_factory=time.monotonic)


@dataclass
class _Tracked:
    request: RecipeRequest
    state: str
    since: float
    requeues: int = 0


class ReductionThread(threading.Thread):
    def __init__(self, queue_dir: Path, log_dir: Path, *, journal: Journal,
                 notify: Callable[[RecipeFinished], None], timeout_s: float = 600.0,
                 max_requeues: int = 2, supervisor: DrpSupervisor | None = None,
                 scan_s: float = 2.0) -> None:
        super().__init__(name="reduction", daemon=True)
        self.queue_dir = Path(queue_dir)
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        self.journal = journal
        self.notify = notify
        self.timeout_s = timeout_s
        self.max_requeues = max_requeues
        self.supervisor = supervisor
        self.scan_s = scan_s
        self.logs = LogFollower(log_dir)
        self.inbox: queue_module.Queue = queue_module.Queue()
        self.tracked: dict[str, _Tracked] = {}
        self.held: list[RecipeRequest] = []
        self._second_tries: set[str] = set()
        self._halt = threading.Event()
        self._observer = None
        self._lock = threading.Lock()

    # --- called from other threads --------------------------------------------------------------

    def submit(self, *requests: RecipeRequest) -> None:
        """Run these recipes. Recipes submitted together are accepted earliest stage first, so an
        arc is held back for the dark that came with it."""
        self.inbox.put(sorted(requests, key=lambda r: STAGES[r.kind]))

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self.inbox.put(None)
        if self._observer is not None:
            self._observer.stop()
        self.join(timeout=timeout)

    def status(self) -> dict:
        with self._lock:
            states: dict[str, int] = {}
            for t in self.tracked.values():
                states[t.state] = states.get(t.state, 0) + 1
            return {"held_for_calibrations": len(self.held), "in_drp_queue": states,
                    "requeued": sum(t.requeues for t in self.tracked.values())}

    # --- the thread ----------------------------------------------------------------------------

    def run(self) -> None:
        self._observer = self._watch()
        next_scan = 0.0
        while not self._halt.is_set():
            try:
                item = self.inbox.get(timeout=0.25)
            except queue_module.Empty:
                item = None
            try:
                if isinstance(item, list):
                    for request in item:
                        self._accept(request)
                elif isinstance(item, tuple):
                    self._on_file(Path(item[1]))
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + self.scan_s
                    self._scan()
            except Exception:  # the thread must outlive any one recipe's trouble
                _log.exception("reduction thread: unexpected error")

    def _watch(self):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        inbox = self.inbox

        class Handler(FileSystemEventHandler):
            def on_moved(self, event) -> None:
                inbox.put(("fs", event.dest_path))

            def on_created(self, event) -> None:
                inbox.put(("fs", event.src_path))

        observer = Observer()
        observer.schedule(Handler(), str(self.queue_dir), recursive=False)
        observer.daemon = True
        observer.start()
        return observer

    def _blocked(self, request: RecipeRequest) -> bool:
        stage = STAGES[request.kind]
        return any(STAGES[t.request.kind] < stage for t in self.tracked.values())

    def _accept(self, request: RecipeRequest) -> None:
        if request.name in self.tracked or any(h.name == request.name for h in self.held):
            return
        if self._blocked(request):
            self.held.append(request)
            return
        found = queue.find(self.queue_dir, request.name)
        if found is None:
            queue.queue_recipe(self.queue_dir, request.name, request.recipe)
            state, since = queue.WAITING, time.monotonic()
        else:
            path, state = found
            since = time.monotonic() - max(0.0, time.time() - path.stat().st_ctime)
            _log.info("recipe %s already in the queue (%s): adopted", request.name, state)
        with self._lock:
            self.tracked[request.name] = _Tracked(request=request, state=state, since=since)
        self.journal.set_state(request.journal_id, "queued", wait=False)
        if state in (queue.DONE, queue.FAILED):
            self._finish(request.name, state == queue.DONE)
        else:
            self._withdraw_later_stages(STAGES[request.kind])

    def _withdraw_later_stages(self, stage: int) -> None:
        """Put recipes of a later stage that no worker has claimed yet back on hold: a cube
        queued before its night's dark arrived must not run while the dark is being made."""
        for name, tracked in list(self.tracked.items()):
            if STAGES[tracked.request.kind] > stage and tracked.state == queue.WAITING \
                    and queue.withdraw(self.queue_dir, name):
                with self._lock:
                    del self.tracked[name]
                self.held.append(tracked.request)
                _log.info("recipe %s withdrawn until the earlier stage is done", name)

    def _on_file(self, path: Path) -> None:
        parsed = queue.state_of(path)
        if parsed is None or parsed[0] not in self.tracked:
            return
        name, state = parsed
        tracked = self.tracked[name]
        if state == tracked.state:
            return
        if state == queue.WORKING:
            tracked.state, tracked.since = state, time.monotonic()
            self.journal.set_state(tracked.request.journal_id, "running", wait=False)
        elif state in (queue.DONE, queue.FAILED):
            self._finish(name, state == queue.DONE)
        else:
            tracked.state = state

    def _finish(self, name: str, ok: bool, reason: str = "") -> None:
        with self._lock:
            tracked = self.tracked.pop(name, None)
        if tracked is None:
            return
        request = tracked.request
        self.logs.poll()
        products = tuple(self.logs.products.get(name, ())) or self._expected_products(request)
        if not ok and not reason:
            reason = self.logs.failures.get(name, "the DRP marked the recipe failed")
        if not ok and self._wait_for_earlier_stage(request, reason):
            return
        self.journal.set_state(request.journal_id, "done" if ok else "failed",
                               error=None if ok else reason, result={"products": list(products)},
                               wait=False)
        self.notify(RecipeFinished(request=request, ok=ok, products=products, reason=reason,
                                   drp_seconds=self.logs.seconds.get(name)))
        held, self.held = self.held, []
        for waiting in sorted(held, key=lambda r: STAGES[r.kind]):
            self._accept(waiting)

    def _wait_for_earlier_stage(self, request: RecipeRequest, reason: str) -> bool:
        """A recipe that failed for want of a calibration while a recipe of an earlier stage is
        still unfinished (an arc whose dark arrived a moment after it, through another
        instruction) is held and run once more when that stage is done."""
        if not MISSING_CALIBRATION.search(reason) or request.name in self._second_tries:
            return False
        if not any(STAGES[r.kind] < STAGES[request.kind]
                   for r in [t.request for t in self.tracked.values()] + self.held):
            return False
        self._second_tries.add(request.name)
        found = queue.find(self.queue_dir, request.name)
        if found is not None:
            found[0].unlink(missing_ok=True)
        self.held.append(request)
        self.journal.set_state(request.journal_id, "queued", wait=False)
        _log.info("recipe %s failed (%s) while an earlier stage is unfinished: held, and run "
                  "again when it is done", request.name, reason)
        return True

    def _expected_products(self, request: RecipeRequest) -> tuple[str, ...]:
        suffix = EXPECTED_SUFFIX.get(request.recipe.short_name)
        if suffix is None or not request.raw:
            return ()
        names = [stem(r) for r in request.raw] if suffix == "spdc" else [stem(request.raw[-1])]
        paths = [Path(request.recipe.output_dir) / f"{n}_{suffix}.fits" for n in names]
        return tuple(str(p) for p in paths if p.exists())

    def _scan(self) -> None:
        """Catch missed events, re-queue stuck recipes, keep the DRP workers alive."""
        if self.supervisor is not None:
            self.supervisor.check()
        self.logs.poll()
        for name in list(self.tracked):
            found = queue.find(self.queue_dir, name)
            if found is None:
                self._finish(name, False, "the recipe file disappeared from the queue")
                continue
            path, state = found
            if state != self.tracked[name].state:
                self._on_file(path)
            if name in self.tracked and self.tracked[name].state == queue.WORKING:
                self._check_stuck(name, path)

    def _check_stuck(self, name: str, path: Path) -> None:
        tracked = self.tracked[name]
        age = time.monotonic() - tracked.since
        pid = self.logs.claims.get(name)
        worker_gone = (self.supervisor is not None and pid is not None
                       and pid not in self.supervisor.pids() and not pid_alive(pid))
        if not worker_gone and age < self.timeout_s:
            return
        why = f"its worker (pid {pid}) died" if worker_gone else f"working for {age:.0f} s"
        if tracked.requeues < self.max_requeues:
            try:
                queue.requeue(path)
            except FileNotFoundError:
                return          # it finished meanwhile
            tracked.requeues += 1
            tracked.state, tracked.since = queue.WAITING, time.monotonic()
            self.logs.claims.pop(name, None)
            _log.warning("recipe %s re-queued (%s; %d of %d)", name, why, tracked.requeues,
                         self.max_requeues)
        else:
            try:
                queue.finish(path, ok=False)
            except FileNotFoundError:
                return
            self._finish(name, False, f"stuck: {why}, re-queued {tracked.requeues} times")
