"""``cruncher demo``: a simulated night at the telescope, end to end, with no configuration.

It simulates a night (darks, an arc, a coronagraphic spectral sequence on TWA 7 with a planet,
then a second target), starts a processing backend (embedded SQLite database, a loopback
websocket, built-in DRP workers, the fast KLIP engine) and the realtime scanner on a fresh work
directory, and lands the raw files in the watched directory one after the other at an accelerated
cadence. The scanner instructs the backend as it would at the telescope: master darks, the quick
wavelength solution, a cube and a quicklook cADI per frame, and the full PSF subtraction of each
finished sequence (cADI, three KLIP reductions, four fake-planet injection runs, calibrated
contrast curves). The demo waits for every product, then prints a summary: frames and products,
latencies, whether the injected planet was found and its SNR, the contrast at 0.25", 0.4" and
0.8", and where the quicklooks and the database are.

Every reduction runs with the survey's parameters. The default night is short (four frames on a
fast-rotating star, one on the next target) so that the demo finishes in about five minutes on
two cores; ``--full`` observes a longer night and reduces both targets. It exits with status 1 if any product is missing or the planet is not found, so it is also a
smoke test of the whole system.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from cruncher.demo.night import DemoNight

_log = logging.getLogger(__name__)


def register(sub, common) -> None:
    from cruncher.cli import add_command

    p = add_command(sub, common, "demo", run,
                    help="a simulated night, end to end, on an embedded SQLite database",
                    description=__doc__)
    defaults = DemoNight()
    p.add_argument("--workdir", help="where to put the night, products and database (default: a "
                                     "new temporary directory, removed afterwards unless --keep)")
    p.add_argument("--frames", type=int, default=None,
                   help=f"science frames on the planet host (default {defaults.frames}, with "
                        f"--full {DemoNight.full().frames}; GPI takes one about every 80 s)")
    p.add_argument("--cadence", type=float, default=defaults.cadence_s, metavar="SECONDS",
                   help=f"seconds between two files landing (default {defaults.cadence_s:g})")
    p.add_argument("--full", action="store_true",
                   help=f"a longer night: {DemoNight.full().frames} frames on the planet host and "
                        f"{DemoNight.full().second_frames} on the second target, both reduced "
                        "in full")
    p.add_argument("--timeout", type=float, default=1800, metavar="SECONDS",
                   help="give up waiting for products after this long (default 1800)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    p.add_argument("--json", metavar="PATH",
                   help="also write the summary as JSON to PATH (latencies in seconds; used by "
                        "the benchmarks)")


def run(args, settings=None) -> int:
    """``settings`` (the command line's) are not used: the demo runs on embedded defaults."""
    logger = logging.getLogger("cruncher")
    level = logger.level
    if not getattr(args, "verbose", 0):
        logger.setLevel(logging.WARNING)        # the demo prints its own progress and summary
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="cruncher-demo-"))
    if args.full:
        night = DemoNight.full(args.frames, cadence_s=args.cadence)
    else:
        night = DemoNight(frames=args.frames or DemoNight().frames, cadence_s=args.cadence)
    try:
        result = observe(workdir, night, timeout_s=args.timeout)
        if args.json:
            Path(args.json).write_text(json.dumps(result.as_dict(), indent=1, default=float) + "\n")
        return 0 if result.ok else 1
    finally:
        logger.setLevel(level)
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def observe(workdir: Path, night: DemoNight, *, timeout_s: float = 1800):
    """The whole demo in ``workdir`` (its ``data`` tree is made afresh); prints as it goes.
    Returns the :class:`~cruncher.demo.report.Report`."""
    # imported here so that building the command line stays quick
    from cruncher.demo import checks, night as nights, report, session
    from cruncher.demo.timeline import Progress, Timeline

    if night.frames < 3:
        raise SystemExit("cruncher demo: --frames must be at least 3 (KLIP needs field rotation)")
    began = time.perf_counter()
    print(f"cruncher demo in {workdir}")
    print(f"- simulating a night: {night.describe()}", flush=True)
    shutil.rmtree(workdir / "sim", ignore_errors=True)    # a reused --workdir: no stale frames
    observed = nights.simulate(night, workdir / "sim")
    print(f"  {len(observed.sources)} raw frames (2048 x 2048) in {time.perf_counter() - began:.0f} s")
    data = workdir / "data"
    shutil.rmtree(data, ignore_errors=True)
    timeline = Timeline()
    services = session.start(data, workdir / "sim", night, timeline)
    progress = Progress(timeline, len(observed.sources))
    print(f"- backend on {services.backend.interface.url}, scanner watching "
          f"{services.settings.paths.raw}; a file every {night.cadence_s:g} s", flush=True)
    try:
        session.land_night(observed, Path(services.settings.paths.raw), night, timeline, progress)
        missing = session.wait_for_products(services, observed, timeline, progress,
                                            timeout_s=timeout_s)
        progress.done()
        failed_jobs = services.backend.journal.recent_failures(limit=20)
    finally:
        services.close()
    cubes = [p.path for p in timeline.products if p.kind == "spdc"]
    lines, truthful = checks.against_truth(cubes, observed.truth,
                                           Path(services.settings.paths.calibrations))
    if not truthful:
        missing.append("cubes that agree with the simulator's truth")
    result = report.build(observed, timeline, missing, report.places(services.settings, timeline),
                          checks=lines, failed_jobs=failed_jobs,
                          elapsed_s=time.perf_counter() - began)
    print(report.text(result))
    return result

