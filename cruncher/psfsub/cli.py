"""``cruncher psfsub``: PSF subtraction of one dataset's cubes in the foreground, without a backend.

The jobs are planned exactly as the backend plans them, and each runs as the backend runs it (a
subprocess with BLAS threads at one, under a time limit, its log under ``<logs>/jobs``); a job
whose prerequisite failed is skipped. Nothing is written to the database: this is for looking at
one dataset by hand, or for a node without one.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from cruncher.config import Settings

FAMILIES = ("cadi", "klip", "contrast")
EPILOG = """\
examples:
  cruncher psfsub /data/reduced/cubes/160315/S20160315S00{10..49}_spdc.fits --outdir out/
  cruncher psfsub CUBES... --outdir out/ --only cadi            the two cADI reductions
  cruncher psfsub CUBES... --outdir out/ --only klip contrast   pyKLIP, fakes, contrast curves
  cruncher psfsub CUBES... --outdir out/ --param lite=true      pyKLIP in lite mode

Products (named as the GPIES Data Cruncher named them) go to --outdir; the result of every job
is printed as it ends. The whole suite on 40 full-size cubes takes hours on a small machine: see
docs/figures.md.
"""


def register(sub, common) -> None:
    from cruncher.cli import add_command

    parser = add_command(sub, common, "psfsub", _run, epilog=EPILOG,
                         help="PSF subtraction and contrast of one dataset, in the foreground")
    parser.add_argument("cubes", nargs="+", type=Path, help="the dataset's spectral cubes")
    parser.add_argument("--outdir", type=Path, required=True, help="where products go")
    parser.add_argument("--only", nargs="+", choices=FAMILIES, default=list(FAMILIES),
                        metavar="FAMILY", help="cadi, klip and/or contrast (default: all three)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter for every job (JSON value), e.g. numthreads=2")
    parser.add_argument("--timeout", type=float, help="seconds per job (default: "
                                                      "psfsub.job_timeout_s)")


def _params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--param {item}: expected KEY=VALUE")
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


def _run(args, settings: Settings) -> int:
    from cruncher.backend.planning import plan_jobs
    from cruncher.backend.runner import JobRunner
    from cruncher.messages import Instruction

    cubes = [str(p.absolute()) for p in args.cubes]
    missing = [c for c in cubes if not Path(c).is_file()]
    if missing:
        print(f"no such cube: {', '.join(missing[:3])}")
        return 2
    instruction = Instruction(files=tuple(cubes), outdir=str(args.outdir.absolute()),
                              level="cube", psfsub=tuple(args.only), params=_params(args.param))
    planned = plan_jobs(instruction, cubes, klip_engine=settings.psfsub.engine)
    if not planned:
        print("PSF subtraction needs at least 2 cubes")
        return 2
    runner = JobRunner(Path(settings.paths.logs) / "jobs",
                       default_timeout_s=args.timeout or settings.psfsub.job_timeout_s)
    failed: set[str] = set()
    stop = threading.Event()
    print(f"{len(planned)} jobs on {len(cubes)} cubes -> {args.outdir}")
    for n, job in enumerate(sorted(planned, key=lambda j: bool(j.depends_on)), start=1):
        name = job.params.get("name", job.algorithm)
        if failed & set(job.depends_on):
            print(f"[{n}/{len(planned)}] {name}: skipped (a job it needs failed)")
            failed.add(job.id)
            continue
        print(f"[{n}/{len(planned)}] {name} ...", flush=True)
        start = time.monotonic()
        outcome = runner.run(job, job.inputs, stop)
        if not outcome.ok:
            failed.add(job.id)
            print(f"    FAILED after {time.monotonic() - start:.0f} s: {outcome.reason} "
                  f"(log: {outcome.log})")
            continue
        print(f"    done in {outcome.seconds:.0f} s")
        for product in outcome.result.products:
            print(f"    {product.kind}: {product.path}")
            for d in (product.extras.get("detections") or [])[:3]:
                print(f"      source at {d['sep_arcsec']:.3f}\" PA {d['pa_deg']:.1f} deg, "
                      f"SNR {d['snr']:.1f}")
        for figure in outcome.result.figures:
            print(f"    figure: {figure}")
    print(f"{len(planned) - len(failed)} of {len(planned)} jobs done")
    return 1 if failed else 0
