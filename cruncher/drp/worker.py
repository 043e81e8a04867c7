"""DRP workers on a recipe queue, exactly as the GPI DRP watches its queue directory.

A worker takes the alphabetically first ``.waiting.xml``, claims it by renaming it to
``.working.xml`` (several workers can share one queue: one rename wins), runs it, and renames it
``.done.xml`` or ``.failed.xml``. It wakes on inotify events from the queue directory and also
polls, so nothing waits long. A worker killed mid-recipe leaves that recipe in ``.working.xml``
for a supervisor to re-queue; the others carry on.

``serve`` runs N worker processes, restarts one that dies, and on SIGTERM/SIGINT lets each finish
its current recipe before exiting.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cruncher.drp.calibrations import CalibrationIndex
from cruncher.drp.drplog import DrpLog
from cruncher.drp.runner import RecipeOutcome, run_recipe
from cruncher.recipes import queue
from cruncher.recipes.recipe import Recipe, RecipeError

_log = logging.getLogger(__name__)
RESTART_BACKOFF_S = (0.5, 2.0, 5.0, 15.0)


@dataclass(frozen=True)
class WorkerConfig:
    queue_dir: Path
    calibrations: Path
    log_dir: Path
    poll_s: float = 1.0
    array: str = "auto"


class QueueWorker:
    """One DRP worker: claims and runs recipes until told to stop."""

    def __init__(self, config: WorkerConfig, name: str = "drp") -> None:
        from cruncher.xp import array_module

        self.config = config
        self.name = name
        self.calibrations = CalibrationIndex(config.calibrations)
        self.log = DrpLog(config.log_dir)
        self.xp = array_module(config.array)
        self._wake = threading.Event()

    def run(self, stop: threading.Event | multiprocessing.synchronize.Event) -> None:
        observer = self._watch()
        self.log.write(self.name, f"worker started on {self.config.queue_dir} (pid {os.getpid()})")
        try:
            while not stop.is_set():
                if not self.run_next():
                    self._wake.wait(self.config.poll_s)
                    self._wake.clear()
        finally:
            if observer is not None:
                observer.stop()
            self.log.write(self.name, "worker stopped")

    def run_next(self) -> bool:
        """Claim and run the first waiting recipe; tell whether there was one."""
        for path in queue.waiting(self.config.queue_dir):
            working = queue.claim(path)
            if working is not None:
                self.process(working)
                return True
        return False

    def process(self, working: Path) -> RecipeOutcome:
        name = queue.state_of(working)[0]
        self.log.write(name, f"claimed by {self.name} (pid {os.getpid()})")
        try:
            recipe = Recipe.from_file(working)
        except RecipeError as exc:
            outcome = RecipeOutcome(ok=False, reason=exc.reason)
            self.log.write(name, f"Recipe FAILED: {exc.reason}")
        else:
            outcome = run_recipe(recipe, name=name, calibrations=self.calibrations, log=self.log,
                                 xp=self.xp)
        try:
            queue.finish(working, outcome.ok)
        except FileNotFoundError:
            self.log.write(name, "recipe was re-queued while it ran; this outcome is discarded")
        _log.info("recipe %s %s", name, "done" if outcome.ok else f"failed: {outcome.reason}")
        return outcome

    def _watch(self):
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return None
        wake = self._wake

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                wake.set()

        observer = Observer()
        observer.schedule(Wake(), str(self.config.queue_dir), recursive=False)
        observer.daemon = True
        observer.start()
        return observer


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (a backend killed with SIGKILL
    must not leave DRP workers behind)."""
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        _log.warning("cannot ask to die with the parent process (not Linux?)")
        return
    if os.getppid() != parent:          # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_in_foreground(config: WorkerConfig, name: str = "drp", *,
                      with_parent: bool = False) -> int:
    """One worker in this process until SIGTERM/SIGINT (the current recipe is finished first)."""
    config.queue_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM,
                                                                          signal.SIGINT)}
    if with_parent:
        die_with_parent()
    try:
        QueueWorker(config, name).run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _worker_main(config: WorkerConfig, name: str, stop, level: int) -> None:
    """Entry point of a worker process."""
    from cruncher.logs import setup_logging

    setup_logging(level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    QueueWorker(config, name).run(stop)


def serve(config: WorkerConfig, workers: int, *, stop_after: float | None = None) -> int:
    """Run ``workers`` worker processes until SIGTERM/SIGINT (or ``stop_after`` seconds)."""
    config.queue_dir.mkdir(parents=True, exist_ok=True)
    mp = multiprocessing.get_context("spawn")
    stop = mp.Event()
    level = logging.getLogger().getEffectiveLevel()
    procs: dict[int, multiprocessing.Process] = {}
    restarts: dict[int, int] = {}

    def start(i: int) -> None:
        proc = mp.Process(target=_worker_main, args=(config, f"drp-{i}", stop, level),
                          name=f"drp-{i}", daemon=False)
        proc.start()
        procs[i] = proc

    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM,
                                                                          signal.SIGINT)}
    began = time.monotonic()
    try:
        for i in range(1, workers + 1):
            start(i)
        _log.info("DRP: %d workers on %s", workers, config.queue_dir)
        while not stop.is_set():
            if stop_after is not None and time.monotonic() - began > stop_after:
                stop.set()
                break
            for i, proc in list(procs.items()):
                if not proc.is_alive() and not stop.is_set():
                    tries = restarts.get(i, 0)
                    _log.warning("DRP worker %d died (exit %s); restarting", i, proc.exitcode)
                    time.sleep(RESTART_BACKOFF_S[min(tries, len(RESTART_BACKOFF_S) - 1)])
                    restarts[i] = tries + 1
                    start(i)
            stop.wait(0.5)
    finally:
        stop.set()
        for proc in procs.values():
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
