"""``cruncher demo``: a simulated night, end to end, on the embedded SQLite database.

What it runs grows with the project. At this stage (simulator and built-in DRP) it simulates a
night (darks, an arc, a spectral sequence on HD 95086 with a planet, a second target), indexes
the raw frames, marks one bad as an observer would, writes the recipes into the DRP queue (master
darks, the quick wavecal from the arc, one cube per good science frame), lets two DRP worker
processes reduce them, records the cubes with their raw inputs in the database, and checks the
results against the simulator's truth. The processing backend, PSF subtraction and the realtime
scanner join the demo as their issues land.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cruncher.config import load_settings


def register(sub, common) -> None:
    from cruncher.cli import add_command

    p = add_command(sub, common, "demo", run,
                    help="a simulated night, end to end, on an embedded SQLite database",
                    description=__doc__)
    p.add_argument("--workdir", help="where to put the night, products and database "
                                     "(default: a new temporary directory, removed afterwards)")
    p.add_argument("--frames", type=int, default=8, help="science frames on the first target")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")


def run(args, settings=None) -> int:
    import logging

    logger = logging.getLogger("cruncher")
    level = logger.level
    if not getattr(args, "verbose", 0):
        logger.setLevel(logging.WARNING)   # the demo prints its own summary
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="cruncher-demo-"))
    try:
        return _run(workdir, args.frames)
    finally:
        logger.setLevel(level)
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _step(text: str) -> float:
    print(f"- {text}", flush=True)
    return time.perf_counter()


def _run(workdir: Path, frames: int) -> int:
    from cruncher.db import engine as dbengine
    from cruncher.db import queries
    from cruncher.db.ingest import ingest
    from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan, simulate_night
    from cruncher.instruments.gpi.sim.scene import Planet

    settings = load_settings(search=False, env={}, overrides={"paths.root": str(workdir)})
    settings.make_dirs()
    print(f"cruncher demo (stage: simulator + built-in DRP) in {workdir}")
    t = _step(f"simulating a night: darks, an arc, {frames} frames of HD 95086, 4 of HR 2562")
    plan = NightPlan(out=workdir / "sim", seed=2, sequences=(
        SequencePlan(target="HD 95086", frames=frames,
                     planets=(Planet(separation_arcsec=0.4, contrast=1e-4),)),
        SequencePlan(target="HR 2562", frames=4, arc=False)), darks=3, arc_darks=2)
    truth = simulate_night(plan)
    raw_dir = Path(settings.paths.raw)
    shutil.copytree(workdir / "sim" / "raw", raw_dir, dirs_exist_ok=True)
    shutil.copytree(workdir / "sim" / "calibrations", settings.paths.calibrations,
                    dirs_exist_ok=True)
    print(f"  {len(truth['frames'])} raw frames in {time.perf_counter() - t:.1f} s")

    engine = dbengine.make_engine(settings.database.url)
    dbengine.init_db(engine)
    report = ingest(engine, [raw_dir], progress=False)
    print(f"- indexed: {report.summary()}")
    science = queries.find_raw(engine, target="HD 95086", obstype="OBJECT")
    queries.add_note(engine, science[2]["filename"], "AO loop opened", bad=True, user="demo")
    print(f"- {science[2]['filename']} marked bad (as an observer would)")

    t = _step("reducing with 2 DRP workers on the recipe queue")
    names = _run_drp(settings, _recipe_stages(engine, settings, truth))
    states = _final_states(Path(settings.paths.queue))
    cubes = sorted(Path(settings.paths.reduced).glob("**/*_spdc.fits"))
    print(f"  {len(names)} recipes ({sum(s == 'done' for s in states.values())} done) and "
          f"{len(cubes)} cubes in {time.perf_counter() - t:.1f} s")

    _record(engine, cubes)
    checks = _check(cubes, truth, settings)
    print(f"- database: {settings.database.url}")
    print("  PSF subtraction and the realtime scanner are not part of the demo yet")
    expected = frames - 1 + 4
    ok = (len(cubes) == expected and all(s == "done" for s in states.values()) and all(checks))
    print("demo " + ("succeeded" if ok else "FAILED"))
    return 0 if ok else 1


def _recipe_stages(engine, settings, truth) -> list[list[tuple[str, object]]]:
    """Recipes in stages: master darks; the quick wavecal (needs its dark); the cubes (need both).

    Workers run a queue's recipes in parallel, so a recipe that needs another's product is only
    queued once that product exists.
    """
    from cruncher.db import queries
    from cruncher.instruments.gpi import keywords as kw
    from cruncher.recipes.templates import make_recipe

    cal = Path(settings.paths.calibrations)
    raw = {Path(r["path"]).name: Path(r["path"]) for r in queries.find_raw(engine)}
    kind = {name: truth["frames"][name] for name in raw}

    def named(prefix, template, files, out):
        return f"{prefix}_{files[0].stem}", make_recipe(template, files, out)

    darks = [named("001_dark", "dark", [raw[n] for n, k in kind.items()
                                       if k["kind"] == "dark" and round(k["itime"], 2) == itime], cal)
             for itime in sorted({round(k["itime"], 2) for k in kind.values() if k["kind"] == "dark"})]
    arcs = [named("002_arc", "quick_wavecal", [raw[n]], cal) for n, k in kind.items()
            if k["kind"] == "arc"]
    cubes = []
    for row in queries.find_raw(engine, obstype="OBJECT"):   # bad frames are left out
        date = f"{row['date_obs']:%Y%m%d}"
        out = Path(settings.paths.reduced) / kw.dataset_dir(row["object"], date, row["band"], "spec")
        cubes.append(named("003_cube", "spectral_science", [Path(row["path"])], out))
    return [darks, arcs, cubes]


def _run_drp(settings, stages, timeout: float = 600) -> list[str]:
    """Two DRP workers; each stage is queued when the one before has finished."""
    from cruncher.recipes import queue

    args = [sys.executable, "-m", "cruncher", "drp", "worker", "--data-root", settings.paths.root,
            "--poll", "0.1", "-q"]
    workers = [subprocess.Popen([*args, "--name", f"drp-{i}"]) for i in (1, 2)]
    names: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        for stage in stages:
            for name, recipe in stage:
                queue.queue_recipe(Path(settings.paths.queue), name, recipe)
                names.append(name)
            while time.monotonic() < deadline:
                states = _final_states(Path(settings.paths.queue))
                if all(states.get(n) in ("done", "failed") for n in names):
                    break
                time.sleep(0.1)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
    return names


def _final_states(qdir: Path) -> dict[str, str]:
    from cruncher.recipes import queue

    return dict(queue.state_of(p) for p in qdir.iterdir() if queue.state_of(p))


def _record(engine, cubes: list[Path]) -> None:
    from astropy.io import fits

    from cruncher.db.products import record_product

    for cube in cubes:
        header = fits.getheader(cube)
        record_product(engine, path=cube, kind="spdc", inputs=[header["DATAFILE"]],
                       target=header["OBJECT"], band="H", mode="spec", grade="science",
                       software=header["DRPVER"])
    print(f"- {len(cubes)} cubes recorded with their raw inputs (raw2reduced)")


def _check(cubes: list[Path], truth: dict, settings) -> list[bool]:
    """Compare what the DRP measured with what the simulator put in."""
    import numpy as np
    from astropy.io import fits

    errors, angles = [], []
    for cube in cubes:
        header = fits.getheader(cube, "SCI")
        frame = truth["frames"][fits.getheader(cube)["DATAFILE"]]
        errors.append(np.hypot(header["PSFCENTX"] - frame["star_centre"][0],
                               header["PSFCENTY"] - frame["star_centre"][1]))
        angles.append(abs(header["AVPARANG"] - frame["avparang"]))
    quick = sorted(Path(settings.paths.calibrations).glob("*_wavecal.fits"))
    quick = [q for q in quick if fits.getheader(q, "SCI").get("WAVECALT") == "quick"]
    flex = fits.getheader(quick[0], "SCI") if quick else {}
    dx, dy = truth["flexure"]
    flex_err = max(abs(flex.get("FLEXDX", 99) - dx), abs(flex.get("FLEXDY", 99) - dy))
    print(f"- flexure from the arc: ({flex.get('FLEXDX', float('nan')):.3f}, "
          f"{flex.get('FLEXDY', float('nan')):.3f}) px; truth ({dx:.3f}, {dy:.3f}); "
          f"error {flex_err:.3f} px")
    print(f"- star centre from the satellite spots: worst error {max(errors, default=99):.3f} px; "
          f"AVPARANG worst error {max(angles, default=99):.3f} deg")
    return [flex_err < 0.1, max(errors, default=99) < 0.1, max(angles, default=99) < 0.05]
