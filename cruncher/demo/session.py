"""The demo's night at the telescope: a backend, its DRP workers and the realtime scanner on a
fresh work directory, the raw files landing one after the other, until every product is made."""
from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cruncher.backend.journal import UNFINISHED
from cruncher.demo.night import SEQUENCE_PRODUCTS, DemoNight, Observed
from cruncher.demo.timeline import Landed, Progress, Timeline

_log = logging.getLogger(__name__)


@dataclass
class Services:
    """What runs during the demo, started and stopped together."""

    settings: object
    backend: object
    scanner: object
    arrivals: object
    stop: threading.Event
    threads: list[threading.Thread]

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        self.arrivals.stop()
        self.scanner.engine.dispose()
        self.backend.stop()


def demo_settings(data: Path, night: DemoNight):
    """Embedded defaults on ``data``; a loopback websocket on a free port; the last sequence
    finished by idleness three file intervals after its last file (at the telescope: when the
    next target's first frame arrives, or after ``realtime.sequence_gap_min``)."""
    from cruncher.config import load_settings

    idle_min = max(0.1, 3 * night.cadence_s / 60)
    return load_settings(search=False, env={}, overrides={
        "paths.root": str(data), "backend.port": "0", "realtime.idle_close_min": f"{idle_min:.3f}",
        "realtime.settle_s": "1", "realtime.rescan_interval_s": "5"})


def start(data: Path, sim: Path, night: DemoNight, timeline: Timeline) -> Services:
    from cruncher.backend.backend import Backend
    from cruncher.instructors.arrivals import Arrivals
    from cruncher.instructors.cli import make_scanner
    from cruncher.instructors.realtime import run

    settings = demo_settings(data, night)
    settings.make_dirs()
    for master in (sim / "calibrations").glob("*.fits"):     # made before the night
        shutil.copy(master, settings.paths.calibrations)
    backend = Backend(settings).start()
    stop = threading.Event()
    threads = [timeline.follow(backend.subscribe(), stop)]
    rt = settings.realtime
    scanner = make_scanner(settings, backend.interface.url)
    arrivals = Arrivals(Path(settings.paths.raw), settle_s=rt.settle_s,
                        rescan_s=rt.rescan_interval_s).start()
    loop = threading.Thread(target=run, args=(scanner, arrivals, stop), kwargs={"tick_s": 1.0},
                            name="demo-scanner", daemon=True)
    loop.start()
    threads.append(loop)
    return Services(settings=settings, backend=backend, scanner=scanner, arrivals=arrivals,
                    stop=stop, threads=threads)


def land_night(observed: Observed, raw_root: Path, night: DemoNight, timeline: Timeline,
               progress: Progress) -> None:
    """The files land as a night's transfers land them (renamed into place, or written slowly)."""
    from cruncher.testing.streaming import stream

    def landed(path: Path, at: float) -> None:
        timeline.landed.append(Landed(name=path.name, target=observed.target(path),
                                      kind=observed.kind(path), at=at))
        progress.tick()

    progress.stage = "observing"
    stream(observed.sources, raw_root, interval_s=night.cadence_s, landed=landed)


def expected_missing(observed: Observed, timeline: Timeline) -> list[str]:
    """The products not made yet: a cube per science frame; for each sequence of two frames or
    more, a quicklook and every product of its full PSF subtraction."""
    missing = [f"cube of {s.name}" for s in observed.science if timeline.cube_of(s.name) is None]
    for target, names in observed.sequences(reducible=True).items():
        if not any(timeline.first_quicklook_with(n) for n in names):
            missing.append(f"{target}: a quicklook")
        missing += [f"{target}: {kind}" for kind in SEQUENCE_PRODUCTS
                    if timeline.of_sequence(kind, names) is None]
    return missing


def backend_idle(backend) -> bool:
    status = backend.status()
    counts = [status["instructions"], *status["jobs"].values()]
    busy = any(n for states in counts for state, n in states.items() if state in UNFINISHED)
    return not busy and not status["running"] and status["psf_queue"]["waiting"] == 0 and \
        status["file_processor"]["inbox"] == 0 and status["file_processor"]["in_progress"] == 0


def wait_for_products(services: Services, observed: Observed, timeline: Timeline,
                      progress: Progress, *, timeout_s: float) -> list[str]:
    """Until every product is made, or the backend has nothing left to do (some will never
    come), or ``timeout_s``. Returns what is missing."""
    progress.stage = "processing"
    deadline = time.monotonic() + timeout_s
    idle_since: float | None = None
    quiet_s = 60 * services.settings.realtime.idle_close_min + 10
    while True:
        missing = expected_missing(observed, timeline)
        if not missing:
            return []
        if time.monotonic() > deadline:
            _log.warning("demo: gave up waiting after %.0f s", timeout_s)
            return missing
        if backend_idle(services.backend):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > quiet_s:
                return missing
        else:
            idle_since = None
        progress.tick()
        time.sleep(0.2)
