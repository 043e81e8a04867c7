"""Raw frame -> ``_spdc`` cube with every primitive, on one CPU core; and the simulator's speed.

    python bench/bench_drp.py [--frames 6] [--runs 3] [--night-frames 40] [--workdir DIR]

Measured:
- per frame, the whole GPIES spectral chain (spectral_science template), in a process pinned to
  one core with BLAS threads at 1: the first frame of a fresh worker (``cold``: includes building
  the extraction plan) and the following frames (``warm``: what a worker on a sequence does);
  median, min, max over every frame of ``--runs`` fresh processes;
- the peak resident memory of that worker process (VmHWM);
- the wall time to simulate a ``--night-frames`` night (darks, arc, science) with 2 processes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import save, stats  # noqa: E402


def child(recipe_dir: Path, calibrations: Path, out: Path) -> None:
    """Reduce the frames given, one recipe per frame, and print timings as JSON."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from cruncher.drp.calibrations import CalibrationIndex
    from cruncher.drp.drplog import DrpLog
    from cruncher.drp.runner import run_recipe
    from cruncher.recipes.recipe import Recipe

    index, log = CalibrationIndex(calibrations), DrpLog(out / "logs")
    times = []
    for path in sorted(recipe_dir.glob("*.xml")):
        start = time.perf_counter()
        outcome = run_recipe(Recipe.from_file(path), name=path.stem, calibrations=index, log=log)
        times.append(time.perf_counter() - start)
        assert outcome.ok, outcome.reason
    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM"))
    print(json.dumps({"times": times, "vmhwm_kb": hwm}))


def prepare(work: Path, frames: int) -> tuple[Path, list[Path]]:
    from cruncher.drp.calibrations import CalibrationIndex
    from cruncher.drp.drplog import DrpLog
    from cruncher.drp.runner import run_recipe
    from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan, simulate_night
    from cruncher.instruments.gpi.sim.scene import Planet
    from cruncher.recipes.templates import make_recipe

    night = work / "night"
    if not (night / "truth.json").exists():
        simulate_night(NightPlan(out=night, sequences=(SequencePlan(
            frames=frames, planets=(Planet(separation_arcsec=0.4, contrast=1e-5),)),)))
    truth = json.loads((night / "truth.json").read_text())
    raw = sorted((night / "raw").glob("*/*.fits"))
    kind = {p: truth["frames"][p.name] for p in raw}
    index, log = CalibrationIndex(night / "calibrations"), DrpLog(work / "logs")
    if not list((night / "calibrations").glob("*_dark.fits")):
        for itime in sorted({round(f["itime"], 2) for f in kind.values() if f["kind"] == "dark"}):
            darks = [p for p, f in kind.items() if f["kind"] == "dark" and round(f["itime"], 2) == itime]
            run_recipe(make_recipe("dark", darks, night / "calibrations"), name="dark",
                       calibrations=index, log=log)
        arcs = [p for p, f in kind.items() if f["kind"] == "arc"]
        run_recipe(make_recipe("quick_wavecal", arcs, night / "calibrations"), name="arc",
                   calibrations=index, log=log)
    science = [p for p, f in kind.items() if f["kind"] == "science"]
    return night, science


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--night-frames", type=int, default=40)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "work" / "drp")
    parser.add_argument("--child", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    from cruncher.recipes.templates import make_recipe

    night, science = prepare(args.workdir, args.frames)
    recipes = args.workdir / "recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    for old in recipes.glob("*.xml"):
        old.unlink()
    for i, raw in enumerate(science):
        (recipes / f"{i:03d}.xml").write_text(
            make_recipe("spectral_science", [raw], args.workdir / "reduced").to_xml())
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cold, warm, memory = [], [], []
    for run in range(args.runs):
        out = subprocess.run([sys.executable, __file__, "--child", str(recipes),
                              str(night / "calibrations"), str(args.workdir)],
                             capture_output=True, text=True, env=env, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        cold.append(result["times"][0])
        warm.extend(result["times"][1:])
        memory.append(result["vmhwm_kb"] / 1024)
        print(f"run {run + 1}: cold {result['times'][0]:.2f} s, warm "
              f"{statistics.median(result['times'][1:]):.2f} s, peak {memory[-1]:.0f} MiB", flush=True)

    from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan, simulate_night

    sim_times = []
    for run in range(args.runs):
        target = args.workdir / f"night40-{run}"
        start = time.perf_counter()
        simulate_night(NightPlan(out=target, sequences=(SequencePlan(frames=args.night_frames),)))
        sim_times.append(time.perf_counter() - start)
        print(f"simulated a {args.night_frames}-frame night in {sim_times[-1]:.1f} s", flush=True)


    payload = {"frame_seconds_cold": stats(cold), "frame_seconds_warm": stats(warm),
               "peak_memory_mib": stats(memory), "cores": 1,
               "night": {"science_frames": args.night_frames, "seconds": stats(sim_times),
                         "processes": 2},
               "gpu": "not measured: no GPU was available to this session"}
    print(json.dumps(payload, indent=1))
    print("results:", save("drp", payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
