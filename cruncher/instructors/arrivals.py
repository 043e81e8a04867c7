"""Which raw files have arrived, complete, under a directory tree that is still being written.

A file counts as arrived when

- it is closed after writing (inotify's close-write event), or
- it is moved or renamed into the tree (rsync, Dropbox and ``scp``-then-rename land files so), or
- as the fallback (a filesystem without close events, or a file only a rescan saw), its size and
  modification time have not changed for ``settle_s`` seconds.

A periodic rescan walks the whole tree and catches whatever the events missed, e.g. files written
into a night directory before the watch on it existed. A path is reported once per (size, mtime):
a file rewritten later is reported again, so a reader that found it truncated gets another go.
Files are reported in the order they were first seen: a file that completes while one seen before
it is still settling is held back (at most ``max_hold_s``), so that a restart's backfill or a slow
copy does not reach the state machine after the frames that followed it.
Names that are not FITS names (the temporary names rsync and copy tools write to) are ignored.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEventHandler

from cruncher.instruments.gpi.keywords import is_fits_name

_log = logging.getLogger(__name__)


class Arrivals:
    """Watch ``root`` recursively; :meth:`get` returns the paths that arrived since, as a batch.

    Parameters
    ----------
    root
        The raw-data root (night directories are created under it during the run).
    settle_s
        How long a file's size must stay the same to count as complete without a close event.
    rescan_s
        Seconds between full rescans of the tree.
    accept
        Which file names are data (default: FITS names).
    max_hold_s
        Longest a complete file waits for an earlier one still being written.
    """

    def __init__(self, root: str | Path, *, settle_s: float = 2.0, rescan_s: float = 60.0,
                 accept: Callable[[str], bool] = is_fits_name, poll_s: float = 0.25,
                 max_hold_s: float = 30.0) -> None:
        self.root = Path(root)
        self.settle_s, self.rescan_s, self.poll_s = settle_s, rescan_s, poll_s
        self.max_hold_s = max_hold_s
        self.accept = accept
        self._ready: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[tuple[int, int], float]] = {}   # path -> (stat key, since)
        self._reported: dict[str, tuple[int, int]] = {}
        self._first_seen: dict[str, float] = {}       # pending path -> when first seen
        self._held: list[tuple[float, float, str]] = []   # (first seen, held since, path)
        self._stop = threading.Event()
        self._observer = None
        self._thread: threading.Thread | None = None

    # --- life ---------------------------------------------------------------------------------

    def start(self, *, initial_scan: bool = True) -> Arrivals:
        from watchdog.observers import Observer

        self.root.mkdir(parents=True, exist_ok=True)
        self._observer = Observer()
        self._observer.schedule(_Handler(self), str(self.root), recursive=True)
        self._observer.start()
        if initial_scan:
            self.rescan()
        self._thread = threading.Thread(target=self._run, name="arrivals", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def get(self, timeout: float | None = None) -> list[str]:
        """The paths that arrived (at least one, waiting up to ``timeout``; [] if none did)."""
        try:
            batch = [self._ready.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                batch.append(self._ready.get_nowait())
            except queue.Empty:
                return batch

    def forget(self, paths: list[str]) -> None:
        """Paths whose handling failed: the next rescan reports them again."""
        with self._lock:
            for path in paths:
                self._reported.pop(path, None)

    # --- what the watchdog handler and the rescan report -----------------------------------

    def complete(self, path: str) -> None:
        """``path`` was closed after writing or moved in: report it now."""
        if self.accept(os.path.basename(path)):
            self._report(path)

    def touched(self, path: str) -> None:
        """``path`` was created or modified: report it once its size settles (unless a close or
        a move reports it first)."""
        if not self.accept(os.path.basename(path)):
            return
        key = _stat_key(path)
        if key is None:
            return
        with self._lock:
            if self._reported.get(path) != key:
                self._pend(path, key)

    def rescan(self) -> int:
        """Walk the tree: every data file not reported as it is now is reported at once if it has
        not been written to for ``settle_s`` (a backfill after a restart goes out as one batch,
        before anything newer), else it becomes pending. Returns how many were found."""
        quiet, busy = [], []
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                path = os.path.join(folder, name)
                key = _stat_key(path) if self.accept(name) else None
                with self._lock:
                    if key is None or self._reported.get(path) == key or path in self._pending:
                        continue
                quiet_for = (time.time_ns() - key[1]) / 1e9
                (quiet if quiet_for >= self.settle_s else busy).append((path, key))
        for path, _key in sorted(quiet):
            self._report(path)
        with self._lock:
            for path, key in busy:
                self._pend(path, key)
        found = len(quiet) + len(busy)
        if found:
            _log.info("rescan of %s found %d file(s) not yet reported", self.root, found)
        return found

    # --- internals ------------------------------------------------------------------------

    def _pend(self, path: str, key: tuple[int, int]) -> None:
        """(Lock held.) ``path`` is being written: wait for it to settle."""
        now = time.monotonic()
        self._pending[path] = (key, now)
        self._first_seen.setdefault(path, now)

    def _unpend(self, path: str) -> float:
        """(Lock held.) ``path`` is no longer pending; when it was first seen."""
        self._pending.pop(path, None)
        return self._first_seen.pop(path, time.monotonic())

    def _report(self, path: str) -> None:
        key = _stat_key(path)
        if key is None:
            return
        with self._lock:
            first = self._unpend(path)
            if self._reported.get(path) == key:
                return
            self._reported[path] = key
            self._held.append((first, time.monotonic(), path))
        self._release()

    def _release(self) -> None:
        """Pass on the complete files no earlier-seen file is still being written before, in the
        order they were first seen (or that waited ``max_hold_s``)."""
        now = time.monotonic()
        with self._lock:
            earliest = min(self._first_seen.values(), default=float("inf"))
            ready = sorted(h for h in self._held if h[0] <= earliest or now - h[1] > self.max_hold_s)
            for item in ready:
                self._held.remove(item)
        for first, since, path in ready:
            if now - since > self.max_hold_s:
                _log.warning("%s: passed on after waiting %.0f s for an earlier file still being "
                             "written", path, now - since, extra={"path": path})
            self._ready.put(path)

    def _run(self) -> None:
        next_rescan = time.monotonic() + self.rescan_s
        while not self._stop.wait(self.poll_s):
            self._settle()
            if time.monotonic() >= next_rescan:
                self.rescan()
                next_rescan = time.monotonic() + self.rescan_s

    def _settle(self) -> None:
        now = time.monotonic()
        with self._lock:
            pending = list(self._pending.items())
        for path, (key, since) in pending:
            current = _stat_key(path)
            if current is None:
                with self._lock:
                    self._unpend(path)
            elif current != key:
                with self._lock:
                    self._pending[path] = (current, now)
            elif now - since >= self.settle_s:
                self._report(path)
        self._release()


def _stat_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class _Handler(FileSystemEventHandler):
    """watchdog's events, passed on to :class:`Arrivals`."""

    def __init__(self, arrivals: Arrivals) -> None:
        super().__init__()
        self.arrivals = arrivals

    def on_closed(self, event) -> None:
        if not event.is_directory:
            self.arrivals.complete(event.src_path)

    def on_moved(self, event) -> None:
        if not event.is_directory:
            self.arrivals.complete(event.dest_path)
        else:   # a whole night directory moved in: its files are there already
            self.arrivals.rescan()

    def on_created(self, event) -> None:
        if not event.is_directory:
            self.arrivals.touched(event.src_path)

    def on_modified(self, event) -> None:
        if not event.is_directory:
            self.arrivals.touched(event.src_path)
