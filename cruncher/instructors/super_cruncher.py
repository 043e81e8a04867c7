"""``super_cruncher``: reprocess a campaign on a cluster, one backend per MPI rank.

    srun --mpi=pmi2 super_cruncher campaign.jsonl --phase cubes
    mpiexec -n 3 super_cruncher campaign.jsonl --phase all --resume

Rank 0 is the controlling node (:mod:`cruncher.instructors.controller`); every rank, rank 0
included, runs a processing backend. The data root (``paths.root`` or ``--outdir``) is shared by
all ranks; each rank keeps its own DRP queue, journal (SQLite), logs and product manifest
(``products.jsonl``, what ``cruncher db ingest-products`` records) under
``<root>/super_cruncher/rank<N>/``, so no database server is needed on the cluster.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import threading
from pathlib import Path

from cruncher.config import Settings
from cruncher.db.announced import MANIFEST

_log = logging.getLogger(__name__)

DESCRIPTION = __doc__.split("\n\n")[0] + """

Reads instructions written by `reprocess --export` (no database needed), hands them out one whole
sequence at a time (calibrations first, then the longest sequences first) to the backends of all
ranks, and appends each one's end to a done-log as it happens. The exit status is 1 if any
sequence failed or any instruction line could not be used; the summary says which and why."""
EPILOG = """\
phases (as GPIES reprocessed its campaign):
  cubes   raw frames -> cubes, calibrations first; no PSF subtraction
  psfsub  PSF subtraction and contrast on the cubes a `cubes` phase made
  all     both

examples:
  mpiexec -n 3 super_cruncher campaign.jsonl
  srun -n 48 --mpi=pmi2 super_cruncher campaign.jsonl --phase cubes --outdir /scratch/gpies
  srun -n 48 --mpi=pmi2 super_cruncher campaign.jsonl --phase psfsub --resume
  super_cruncher campaign.jsonl --map /data/raw=/scratch/gpies/raw     (one process)

See slurm/super_cruncher.sbatch for a batch script."""


def parser() -> argparse.ArgumentParser:
    from cruncher.cli import common_options

    p = argparse.ArgumentParser(prog="super_cruncher", description=DESCRIPTION, epilog=EPILOG,
                                parents=[common_options()],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(handler=_main, logs_to_file=False, setting_flags={})
    p.add_argument("instructions", type=Path, help="JSON Lines from `reprocess --export`")
    p.add_argument("--phase", choices=("cubes", "psfsub", "all"), default="all")
    p.add_argument("--outdir", type=Path, metavar="ROOT",
                   help="data root for the products (same layout as paths.root; default: where "
                        "the instructions say)")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                   help="replace a path prefix in the instructions (the data sit elsewhere here)")
    p.add_argument("--done-log", type=Path, metavar="FILE",
                   help="where each task's end is appended (default: INSTRUCTIONS.done.jsonl)")
    p.add_argument("--resume", action="store_true",
                   help="skip the tasks the done-log says are done")
    p.add_argument("--summary", type=Path, metavar="FILE",
                   help="also write the final summary as JSON (for records and benchmarks)")
    return p


def _main(args, settings: Settings) -> int:
    from cruncher import pathmap
    from cruncher.errors import CruncherError, ValidationError
    from cruncher.instructors import campaign

    comm = _world()
    rank = comm.Get_rank() if comm is not None else 0
    loaded, roots, error = None, None, None
    if rank == 0:       # only the controller reads the campaign; the others are told its roots
        try:
            if not args.instructions.is_file():
                raise ValidationError("INSTRUCTIONS", f"{args.instructions}: no such file (write "
                                                      "one with `reprocess ... --export FILE`)")
            loaded = campaign.load(args.instructions, args.phase, remap=pathmap.parse(args.map),
                                   outdir=str(args.outdir) if args.outdir else None)
            roots = data_roots(loaded.tasks)
        except (CruncherError, OSError) as exc:
            error = exc
    if comm is not None:
        roots = comm.bcast(roots, root=0)       # None: rank 0 could not start, and says why
    if error is not None:
        raise error
    if roots is None:
        return 1
    settings = rank_settings(settings, rank, args.outdir, roots)
    if rank == 0:
        return _control(args, settings, loaded, comm)
    _serve(settings, "mpi")
    return 0


def _control(args, settings: Settings, loaded, comm) -> int:
    from cruncher.instructors.campaign import DoneLog
    from cruncher.instructors.controller import Controller, Links

    done_log = DoneLog(args.done_log or args.instructions.with_suffix(".done.jsonl"))
    if not args.resume and done_log.path.exists():
        done_log.path.rename(done_log.path.with_suffix(".previous.jsonl"))
    for problem in loaded.problems:
        print(f"super_cruncher: {problem}", flush=True)
    backend = _backend(settings, "queue")
    links = Links(backend, comm)
    print(f"super_cruncher: {len(loaded.tasks)} task(s), phase {args.phase}, "
          f"{len(links.ranks())} backend(s); done-log {done_log.path}", flush=True)
    try:
        summary = Controller(loaded.tasks, links, done_log,
                             progress=lambda line: print(line, flush=True)).run()
    finally:
        links.shutdown()
        backend.stop()
        backend.manifest.join(timeout=30)
    for line in summary.lines():
        print(line, flush=True)
    if args.summary:
        import json

        args.summary.write_text(json.dumps({**dataclasses.asdict(summary), "ranks": len(
            links.ranks()), "phase": args.phase, "problems": loaded.problems}, indent=1) + "\n")
    for problem in loaded.problems:
        print(f"  unusable instruction: {problem}", flush=True)
    return 0 if summary.ok and not loaded.problems else 1


def _serve(settings: Settings, interface: str) -> None:
    backend = _backend(settings, interface)
    backend.wait()
    backend.manifest.join(timeout=30)


def _backend(settings: Settings, interface: str):
    """A rank's backend, on a fresh journal and DRP queue: the done-log, not the journal, is what
    a resubmitted job goes by (a journal resuming its own unfinished work could race another rank
    given the same sequence)."""
    import shutil

    from cruncher.backend.backend import Backend

    shutil.rmtree(settings.paths.queue, ignore_errors=True)
    Path(settings.database.url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    settings.make_dirs()
    backend = Backend(settings, interface=interface).start()
    backend.manifest = _manifest_writer(backend, Path(settings.paths.logs).parent / MANIFEST)
    return backend


def _manifest_writer(backend, path: Path) -> threading.Thread:
    """Append every product the backend announces to ``path``, for `cruncher db
    ingest-products` where the database is (it stops once the backend has stopped)."""
    from cruncher.db.announced import append_to_manifest

    subscription = backend.subscribe()

    def run() -> None:
        while True:
            event = subscription.get(timeout=1.0)
            if event is None and subscription.closed:
                return
            if event is not None and event.type == "product":
                append_to_manifest(path, event)

    thread = threading.Thread(target=run, name="product-manifest", daemon=True)
    thread.start()
    return thread


def data_roots(tasks) -> list[str]:
    """The directories a campaign reads from and writes to (the longest common paths)."""
    reads = [f for t in tasks for f in t.instruction.files]
    writes = [t.instruction.outdir for t in tasks]
    return sorted({os.path.commonpath(group) for group in (reads, writes) if group})


def rank_settings(settings: Settings, rank: int, outdir: Path | None,
                  roots: list[str]) -> Settings:
    """A rank's settings: the shared data root, its own queue, journal and logs, and the
    campaign's directories (:func:`data_roots`) as extra data roots."""
    paths = settings.paths
    if outdir is not None:
        root = outdir.resolve()
        paths = dataclasses.replace(paths, root=str(root), raw=str(root / "raw"),
                                    reduced=str(root / "reduced"),
                                    calibrations=str(root / "calibrations"))
    own = Path(paths.root) / "super_cruncher" / f"rank{rank}"
    paths = dataclasses.replace(paths, queue=str(own / "queue"), logs=str(own / "logs"),
                                extra_roots=tuple(sorted({*paths.extra_roots, *roots})))
    database = dataclasses.replace(settings.database, url=f"sqlite:///{own / 'journal.db'}")
    return dataclasses.replace(settings, paths=paths, database=database)


def _world():
    """MPI's world communicator when run under mpiexec/srun with several ranks, else None."""
    if not any(k in os.environ for k in ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE",
                                         "SLURM_PROCID", "HYDRA_CONTROL_FD", "PMI_FD")):
        return None
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


