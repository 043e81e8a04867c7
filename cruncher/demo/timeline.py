"""What happened during the demo, and when: files landing, and the backend's announcements."""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cruncher.messages import Failure, ProductReady


@dataclass(frozen=True)
class Landed:
    name: str
    target: str
    kind: str
    at: float                  # time.time() when the file was complete in the watched directory


@dataclass
class Timeline:
    """Landings (from the streamer) and products and failures (from a backend subscription),
    each with its wall-clock time; :meth:`follow` keeps it up to date in a thread."""

    landed: list[Landed] = field(default_factory=list)
    products: list[ProductReady] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    began: float = field(default_factory=time.time)

    def follow(self, subscription, stop: threading.Event) -> threading.Thread:
        def pump() -> None:
            while not stop.is_set():
                event = subscription.get(timeout=0.2)
                if isinstance(event, ProductReady):
                    self.products.append(event)
                elif isinstance(event, Failure):
                    self.failures.append(event)
        thread = threading.Thread(target=pump, name="demo-events", daemon=True)
        thread.start()
        return thread

    # --- questions ------------------------------------------------------------------------------

    def cube_of(self, raw_name: str) -> ProductReady | None:
        cube = raw_name.replace(".fits", "_spdc.fits")
        return next((p for p in self.products if p.kind == "spdc" and Path(p.path).name == cube),
                    None)

    def first_quicklook_with(self, raw_name: str) -> ProductReady | None:
        return next((p for p in self.products if p.kind == "quicklook_png"
                     and any(Path(r).name == raw_name for r in p.inputs)), None)

    def of_sequence(self, kind: str, raw_names: list[str]) -> ProductReady | None:
        """The first full-sequence product of ``kind`` made from exactly these raw frames."""
        wanted = set(raw_names)
        return next((p for p in self.products if p.kind == kind and not p.job_id.startswith("ql:")
                     and {Path(r).name for r in p.inputs} == wanted), None)

    def landed_at(self, raw_name: str) -> float | None:
        return next((f.at for f in self.landed if f.name == raw_name), None)


class Progress:
    """One status line: rewritten in place on a terminal; in a log, a line when something
    changed (at most every ``every_s``) and otherwise one a minute."""

    def __init__(self, timeline: Timeline, total_files: int, *, every_s: float = 5.0,
                 stream=None) -> None:
        self.timeline, self.total_files = timeline, total_files
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every_s = 0.5 if self.tty else every_s
        self.stage = "starting"
        self._last, self._shown = 0.0, ""

    def counts(self) -> str:
        t = self.timeline
        kinds = [p.kind for p in t.products]
        psf = sum(1 for p in t.products if p.kind != "spdc" and not p.job_id.startswith("ql:"))
        return (f"{self.stage}: {len(t.landed)}/{self.total_files} files landed, "
                f"{kinds.count('spdc')} cubes, {kinds.count('quicklook_png')} quicklooks, "
                f"{psf} PSF-subtraction products, {len(t.failures)} failures")

    def line(self) -> str:
        elapsed = time.time() - self.timeline.began
        return f"  [{int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {self.counts()}"

    def tick(self, *, force: bool = False) -> None:
        now, counts = time.monotonic(), self.counts()
        since = now - self._last
        if not force and (since < self.every_s or (not self.tty and counts == self._shown
                                                   and since < 60)):
            return
        self._last, self._shown = now, counts
        if self.tty:
            self.stream.write("\r" + self.line().ljust(110)[:150])
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def done(self) -> None:
        self.tick(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
