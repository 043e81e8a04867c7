"""PSF subtraction on the standard dataset: cADI, pyKLIP's general reduction, the whole suite.

    python bench/bench_psfsub.py [--cubes 10 20 40] [--cadi-runs 3] [--no-suite] [--workdir DIR]

The standard dataset is 40 simulated cubes of 37 x 281 x 281 (H band, beta Pic, about 30 deg of
field rotation). Each job runs as the backend runs it: ``python -m cruncher.psfsub JOBFILE`` in a
session of its own with BLAS threads pinned to one, two worker processes for pyKLIP. Measured:

- wall time and peak memory of the two cADI reductions (median of ``--cadi-runs``);
- wall time and peak memory of the general pyKLIP reduction on 10, 20 and 40 cubes (subsets spread
  over the whole sequence, so each keeps the full rotation; ``lite`` is chosen by the memory model,
  as in service), once each: these runs are long;
- the whole suite of one dataset (2 cADI, 3 KLIP reductions, 4 injection runs, the contrast job)
  through a real backend with one KLIP worker, from the instruction to its end, with the time of
  every job.

Memory is the peak proportional set size of the process tree (shared memory counted once),
sampled every half second. Results go to ``bench/results/<date>-psfsub.json`` after every step,
so a long run that is cut short keeps what it measured.
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
from common import TreeMemory, save, stats  # noqa: E402

TARGET, FRAMES = "beta Pic", 40
SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def make_dataset(work: Path) -> list[str]:
    """The standard dataset, simulated once and kept in ``work``."""
    from cruncher.instruments.gpi.sim.cubes import simulate_cubes
    from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan
    from cruncher.instruments.gpi.sim.scene import Planet

    out = work / "dataset"
    cubes = sorted(str(p) for p in (out / "cubes").glob("*/*_spdc.fits"))
    if len(cubes) != FRAMES:
        print(f"simulating {FRAMES} cubes of {TARGET} ...", flush=True)
        planet = Planet(separation_arcsec=0.4, contrast=1e-5, spectral_type="L", pa_deg=60)
        simulate_cubes(NightPlan(out=out, seed=1, workers=2, sequences=(SequencePlan(
            target=TARGET, frames=FRAMES, planets=(planet,)),)))
        cubes = sorted(str(p) for p in (out / "cubes").glob("*/*_spdc.fits"))
    return cubes


def spread(cubes: list[str], n: int) -> list[str]:
    """``n`` cubes evenly spread over the sequence (so the subset keeps its rotation)."""
    step = (len(cubes) - 1) / max(n - 1, 1)
    return [cubes[round(i * step)] for i in range(n)]


def run_job(work: Path, algorithm: str, inputs: list[str], params: dict | None = None) -> dict:
    """One job as the backend runs it; wall time, peak memory and the job's own timings."""
    from cruncher.psfsub.job import JobFile, Result

    job_dir = work / "jobs" / f"{algorithm}-{len(inputs)}-{time.time_ns()}"
    spec = JobFile(id=f"bench:{algorithm}", algorithm=algorithm, inputs=tuple(inputs),
                   outdir=str(job_dir / "out"), result=str(job_dir / "result.json"),
                   params={"name": algorithm, "numthreads": 2, **(params or {})})
    path = spec.write(job_dir / "job.json")
    start = time.perf_counter()
    with open(job_dir / "job.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cruncher.psfsub", str(path)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **SINGLE_THREADED})
        with TreeMemory(proc.pid) as memory:
            code = proc.wait()
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"{algorithm} on {len(inputs)} cubes failed ({code}); see {job_dir}")
    result = Result.read(spec.result)
    lite = next((p.extras.get("lite") for p in result.products if "lite" in p.extras), None)
    engine = None
    if algorithm.startswith("klip"):
        from cruncher.psfsub.klip import DEFAULT_ENGINE
        engine = (params or {}).get("engine", DEFAULT_ENGINE)
    return {"wall_s": round(wall, 2), "peak_gb": round(memory.peak / 1e9, 2), "engine": engine,
            "timings": result.timings, "lite": lite, "kl_cube": result.products[0].path}


def bench_cadi(work: Path, cubes: list[str], runs: int) -> dict:
    out = {}
    for algorithm in ("cadi", "cadi_sdi"):
        measured = [run_job(work, algorithm, cubes) for _ in range(runs)]
        out[algorithm] = {"wall_s": stats([m["wall_s"] for m in measured]),
                          "peak_gb": stats([m["peak_gb"] for m in measured])}
        print(f"{algorithm}: {out[algorithm]['wall_s']['median']:.1f} s, "
              f"{out[algorithm]['peak_gb']['median']:.2f} GB", flush=True)
    return out


def bench_suite(work: Path, cubes: list[str]) -> dict:
    """Every job of one dataset through a real backend (one cADI, one KLIP worker)."""
    from sqlalchemy import select

    from cruncher.backend.backend import Backend
    from cruncher.config import load_settings
    from cruncher.db import schema

    root = work / "suite"
    settings = load_settings(search=False, env={}, overrides={
        "paths.root": str(root), "paths.extra_roots": str(work / "dataset"),
        "backend.port": "0", "backend.interface": "queue", "drp.mode": "external",
        "psfsub.klip_workers": "1", "psfsub.cadi_workers": "1", "psfsub.job_timeout_s": "20000"})
    backend = Backend(settings).start()
    try:
        events = backend.subscribe()
        start = time.perf_counter()
        with TreeMemory(os.getpid(), interval=1.0) as memory:
            reply = backend.interface.send({
                "files": cubes, "outdir": str(root / "reduced" / "beta_Pic" / "autoreduced" /
                                              "20160315_H_Spec"),
                "level": "cube", "psfsub": ["cadi", "klip", "contrast"], "force": True})
            state = None
            while state is None:
                event = events.get(timeout=5)
                if event is not None and event.type == "finished" \
                        and event.job_id == reply["instruction_id"]:
                    state = event.state
        wall = time.perf_counter() - start
        with backend.engine.connect() as conn:
            rows = conn.execute(select(schema.jobs).where(schema.jobs.c.kind == "psf")).mappings()
            per_job = {json.loads(r["payload"])["params"]["name"]: {
                "state": r["state"],
                "wall_s": round((r["finished_at"] - r["started_at"]).total_seconds(), 1)
                if r["finished_at"] and r["started_at"] else None} for r in rows}
    finally:
        backend.stop()
    print(f"suite: {wall:.0f} s, {memory.peak / 1e9:.2f} GB ({state})", flush=True)
    return {"state": state, "wall_s": round(wall, 1), "peak_gb": round(memory.peak / 1e9, 2),
            "klip_workers": 1, "engine": settings.psfsub.engine, "jobs": per_job}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cubes", type=int, nargs="*", default=[10, 20, 40],
                        help="general pyKLIP reduction on these numbers of cubes")
    parser.add_argument("--cadi-runs", type=int, default=3)
    parser.add_argument("--no-suite", dest="suite", action="store_false",
                        help="skip the whole-suite run (hours on 2 cores)")
    parser.add_argument("--suite-cubes", type=int, default=40,
                        help="run the whole suite on this many of the 40 cubes (spread in time)")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "work" / "psfsub")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cubes = make_dataset(args.workdir)
    from cruncher.psfsub.dataset import load

    light = load(cubes)
    payload = {"dataset": {"cubes": len(cubes), "shape": list(light.cubes.shape[1:]),
                           "band": light.band, "field_rotation_deg": round(light.field_rotation, 1)},
               "pyklip_workers": 2}
    del light
    payload["cadi"] = bench_cadi(args.workdir, cubes, args.cadi_runs)
    save("psfsub", payload)
    payload["klip_general"] = {}
    for n in args.cubes:
        measured = run_job(args.workdir, "klip_general", spread(cubes, n))
        payload["klip_general"][str(n)] = measured
        print(f"klip_general, {n} cubes: {measured['wall_s']:.0f} s, {measured['peak_gb']:.2f} GB"
              f"{' (lite)' if measured['lite'] else ''}", flush=True)
        save("psfsub", payload)
    if args.suite:
        payload["suite"] = bench_suite(args.workdir, spread(cubes, args.suite_cubes))
        payload["suite"]["cubes"] = args.suite_cubes
        busy = [j["wall_s"] for j in payload["suite"]["jobs"].values() if j["wall_s"]]
        payload["suite"]["sum_of_jobs_s"] = round(sum(busy), 1)
        payload["suite"]["median_job_s"] = statistics.median(busy) if busy else None
    print(save("psfsub", payload))


if __name__ == "__main__":
    main()
