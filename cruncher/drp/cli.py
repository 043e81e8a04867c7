"""``cruncher drp``: the built-in DRP on a recipe queue, one recipe in the foreground, calibrations."""
from __future__ import annotations

import argparse
from pathlib import Path

from cruncher.config import Settings

EPILOG = """\
examples:
  cruncher drp --workers 2                    serve the configured queue (paths.queue)
  cruncher drp --queue /data/queue --calibrations /data/calibrations
  cruncher drp worker --name drp-3              one worker in the foreground
  cruncher drp run /data/queue/spdc_S20131118S0064.waiting.xml
  cruncher drp calibrations --rebuild         rescan the calibrations directory

Recipes follow the GPI queue protocol: NAME.waiting.xml -> .working.xml -> .done.xml or
.failed.xml; each product is logged as "File output to: PATH" in <logs>/gpi_drp_YYMMDD.log.
"""


def register(sub, common) -> None:
    from cruncher.cli import add_command

    parser = add_command(sub, common, "drp", _serve, logs_to_file=True, epilog=EPILOG,
                         help="the built-in Python DRP: raw frames -> calibrated datacubes")
    _dirs(parser)
    parser.add_argument("--workers", type=int, help="worker processes (default: drp.workers)")
    parser.add_argument("--poll", type=float, help="seconds between queue polls "
                                                   "(default: drp.poll_interval_s)")
    drpsub = parser.add_subparsers(dest="drp_command", metavar="DRP_COMMAND")
    one = add_command(drpsub, common, "worker", _worker, logs_to_file=True,
                      help="one worker in this process (what a supervisor starts)")
    one.add_argument("--name", default="drp", help="worker name in the DRP log")
    one.add_argument("--die-with-parent", action="store_true",
                     help="exit when the process that started this one dies (used by the backend)")
    one.add_argument("--poll", type=float, default=argparse.SUPPRESS, help="seconds between polls")
    _dirs(one)
    run = add_command(drpsub, common, "run", _run, help="run one recipe in the foreground")
    run.add_argument("recipe", type=Path, help="recipe XML file (any name)")
    _dirs(run)
    cals = add_command(drpsub, common, "calibrations", _calibrations,
                       help="list the calibration index (or --rebuild it)")
    cals.add_argument("--rebuild", action="store_true", help="rescan the directory's headers")
    _dirs(cals)


def _dirs(parser) -> None:
    # SUPPRESS: given before or after a sub-subcommand, a directory is kept, never reset to None
    quiet = argparse.SUPPRESS
    parser.add_argument("--queue", type=Path, default=quiet,
                        help="queue directory (default: paths.queue)")
    parser.add_argument("--calibrations", type=Path, default=quiet,
                        help="calibrations directory (default: paths.calibrations)")
    parser.add_argument("--log-dir", type=Path, default=quiet,
                        help="DRP log directory (default: paths.logs)")


def _config(args, settings: Settings):
    from cruncher.drp.worker import WorkerConfig

    return WorkerConfig(queue_dir=Path(getattr(args, "queue", None) or settings.paths.queue),
                        calibrations=Path(getattr(args, "calibrations", None)
                                          or settings.paths.calibrations),
                        log_dir=Path(getattr(args, "log_dir", None) or settings.paths.logs),
                        poll_s=args.poll if getattr(args, "poll", None) else
                        settings.drp.poll_interval_s, array=settings.compute.array)


def _serve(args, settings: Settings) -> int:
    from cruncher.drp.worker import serve

    config = _config(args, settings)
    workers = args.workers or settings.drp.workers
    print(f"DRP: {workers} worker(s) on {config.queue_dir}; Ctrl-C to stop")
    return serve(config, workers)


def _worker(args, settings: Settings) -> int:
    from cruncher.drp.worker import run_in_foreground

    return run_in_foreground(_config(args, settings), args.name, with_parent=args.die_with_parent)


def _run(args, settings: Settings) -> int:
    from cruncher.drp.worker import QueueWorker
    from cruncher.recipes import queue

    config = _config(args, settings)
    worker = QueueWorker(config, name="drp-run")
    path = args.recipe
    if queue.state_of(path) and queue.state_of(path)[1] == queue.WAITING:
        claimed = queue.claim(path)
        if claimed is None:
            print(f"{path}: another worker took it")
            return 1
        outcome = worker.process(claimed)
    else:
        outcome = _run_plain(worker, path)
    for product in outcome.products:
        print(f"File output to: {product}")
    print(f"recipe {'done' if outcome.ok else 'FAILED: ' + outcome.reason} "
          f"({outcome.seconds:.1f} s)")
    return 0 if outcome.ok else 1


def _run_plain(worker, path: Path):
    from cruncher.drp.runner import RecipeOutcome, run_recipe
    from cruncher.recipes.recipe import Recipe, RecipeError

    try:
        recipe = Recipe.from_file(path)
    except RecipeError as exc:
        return RecipeOutcome(ok=False, reason=exc.reason)
    return run_recipe(recipe, name=path.stem, calibrations=worker.calibrations, log=worker.log,
                      xp=worker.xp)


def _calibrations(args, settings: Settings) -> int:
    from cruncher.drp.calibrations import CalibrationIndex

    index = CalibrationIndex(getattr(args, "calibrations", None) or settings.paths.calibrations)
    entries = index.rebuild() if args.rebuild else index.entries()
    for e in sorted(entries, key=lambda e: (e.kind, e.band or "", e.mjd)):
        extra = f"ITIME={e.itime:.2f}" if e.kind == "dark" and e.itime else (
            "quick" if e.quick else "")
        print(f"{e.kind:<10} {e.band or '-':<3} MJD {e.mjd:11.4f} {extra:<14} {e.path}")
    print(f"({len(entries)} calibrations in {index.directory})")
    return 0
