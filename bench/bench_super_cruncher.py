"""``super_cruncher``'s figures (issue G).

    python bench/bench_super_cruncher.py [--sequences 4] [--frames 4] [--ranks 1 2 3] [--runs 3]

- **a small campaign at 1, 2 and 3 ranks**: one simulated night (darks, an arc, SEQUENCES
  sequences of FRAMES full-size frames on different targets), indexed and exported with
  ``reprocess --all --psfsub cadi --export``, then run from raw to cubes and cADI with
  ``mpiexec -n R super_cruncher`` (a fresh output root each run). Wall time of the whole command
  (MPI start-up and every backend's start included), the controller's own wall time, and the busy
  fraction of each rank.
- **dispatch overhead at rank 0**: the time rank 0 spends handing out one task (encoding it,
  sending it, waiting for the backend's reply, bookkeeping), from every run's summary.
- **the GPIES 2016 campaign, extrapolated** from costs measured on this machine (stated with the
  result): cubes per raw frame from ``bench_drp.py``; PSF subtraction per 40-cube sequence from
  ``bench_klip_engines.py`` (the fast engine's general reduction) and ``bench_psfsub.py`` (how the
  suite's jobs compare with it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, RESULTS_ENV, save, stats  # noqa: E402

BIN = Path(sys.executable).parent
TARGETS = ("HD 95086", "HR 2562", "beta Pic", "HR 4796A", "AU Mic", "HD 206893")  # all rotate
GPIES_2016 = {"raw_frames": 17_008, "paper_wall_h": 22.9, "paper_cores": 720,
              "paper_cpu_hours": 16_560}


def prepare(sequences: int, frames: int) -> tuple[Path, Path]:
    """The simulated night (cached), indexed and exported; (data root, instruction file)."""
    from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan, simulate_night

    work = Path(__file__).parent / "work" / f"campaign-{sequences}x{frames}"
    data, export = work / "data", work / "campaign.jsonl"
    if export.exists():
        return data, export
    shutil.rmtree(work, ignore_errors=True)
    plans = tuple(SequencePlan(target=TARGETS[i % len(TARGETS)], frames=frames, arc=i == 0)
                  for i in range(sequences))
    simulate_night(NightPlan(out=work / "sim", sequences=plans, darks=3, arc_darks=2, seed=4))
    shutil.copytree(work / "sim" / "raw", data / "raw")
    _masters(work / "sim", data)
    common = ["--data-root", str(data)]
    _run([BIN / "cruncher", "db", "ingest", str(data / "raw"), *common])
    _run([BIN / "reprocess", "--all", "--psfsub", "cadi", "--export", str(export), *common])
    return data, export


def campaign_run(data: Path, export: Path, ranks: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        _masters(data.parent / "sim", out)
        summary = Path(tmp) / "summary.json"
        began = time.perf_counter()
        _run([BIN / "mpiexec", "-n", str(ranks), BIN / "super_cruncher", export, "--outdir", out,
              "--done-log", Path(tmp) / "done.jsonl", "--summary", summary])
        wall = time.perf_counter() - began
        result = json.loads(summary.read_text())
        tasks = [json.loads(line) for line in (Path(tmp) / "done.jsonl").read_text().splitlines()]
    return {"ranks": ranks, "wall_s": wall, "controller_wall_s": result["wall_s"],
            "busy": result["busy"], "dispatch_ms": result["dispatch_ms"],
            "done": len(result["done"]), "failed": result["failed"],
            "task_s": {t["label"]: t["seconds"] for t in tasks}}


def extrapolate(nodes: list[int], cores_per_node: int = 24, frames_per_sequence: int = 40) -> dict:
    """GPIES 2016 on N nodes, from this machine's measured costs (the assumptions are returned)."""
    drp = _latest("drp", lambda d: d["frame_seconds_warm"]["median"])
    klip = _latest("klip-engines", lambda d: d["sizes"]["40"]["fast"]["median_wall_s"])
    suite = _latest("psfsub", lambda d: d["suite"]["jobs"]["klip_general"]["wall_s"])
    cube_core_s = drp["frame_seconds_warm"]["median"]                 # one core per DRP worker
    general_core_s = klip["sizes"]["40"]["fast"]["median_wall_s"] * 2  # the job uses both cores
    jobs = suite["suite"]["jobs"]
    general = jobs["klip_general"]["wall_s"]
    # every job of the suite relative to the general reduction, as measured in that suite run
    relative = sum(j["wall_s"] for j in jobs.values()) / general
    sequences = GPIES_2016["raw_frames"] / frames_per_sequence
    cubes_h = GPIES_2016["raw_frames"] * cube_core_s / 3600
    psf_h = sequences * relative * general_core_s / 3600
    out = {"assumptions": {
        "cube_core_s_per_frame": round(cube_core_s, 3),
        "klip_general_core_s_per_40_cubes": round(general_core_s, 1),
        "suite_relative_to_general": round(relative, 2),
        "frames_per_sequence": frames_per_sequence, "sequences": round(sequences),
        "cores_per_node": cores_per_node,
        "memory": "fast engine 3.9 GB per 40-cube KLIP job: a 24-core node with 96 GB runs "
                  "24 one-core jobs only if each sequence's jobs are spread; assumed so",
        "scaling": "perfect within the phase, plus the longest single job as a tail",
        "measured_in": [drp["file"], klip["file"], suite["file"]]},
        "cpu_hours": {"cubes": round(cubes_h, 1), "psfsub": round(psf_h, 1),
                      "total": round(cubes_h + psf_h, 1)}, "wall_h": {}}
    tail_h = general_core_s / 3600
    for n in nodes:
        out["wall_h"][str(n)] = round((cubes_h + psf_h) / (n * cores_per_node) + tail_h, 2)
    return out


def _latest(name: str, has: Callable[[dict], object]) -> dict:
    """The newest ``<date>-<name>.json`` holding what ``has`` looks for: the runner's results of
    this run first, then those kept in ``bench/results``. Its path is kept under ``"file"``."""
    dirs = [Path(d) for d in (os.environ.get(RESULTS_ENV), RESULTS) if d]
    for directory in dirs:
        for path in sorted(directory.glob(f"*-{name}.json"), reverse=True):
            found = json.loads(path.read_text())
            try:
                if has(found):
                    return {**found, "file": str(path)}
            except (KeyError, TypeError):
                continue
    raise SystemExit(f"no bench/results/*-{name}.json with the figure needed: "
                     f"run bench/bench_{name.replace('-', '_')}.py first")


def _masters(sim: Path, root: Path) -> None:
    (root / "calibrations").mkdir(parents=True, exist_ok=True)
    for master in (sim / "calibrations").glob("S*E000*.fits"):
        shutil.copy(master, root / "calibrations")


def _run(command: list) -> str:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({done.returncode}):\n{done.stdout[-3000:]}"
                         f"\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--ranks", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, nargs="*", default=[1, 10, 30])
    args = parser.parse_args()
    data, export = prepare(args.sequences, args.frames)
    out: dict = {"campaign": {"sequences": args.sequences, "frames": args.frames,
                              "psfsub": "cadi"}, "ranks": {}}
    dispatch = []
    for ranks in args.ranks:
        runs = []
        for i in range(args.runs):
            runs.append(campaign_run(data, export, ranks))
            print(f"{ranks} rank(s), run {i + 1}: {runs[-1]['wall_s']:.1f} s, busy "
                  f"{runs[-1]['busy']}, dispatch median "
                  f"{statistics.median(runs[-1]['dispatch_ms']):.2f} ms", flush=True)
            dispatch += runs[-1]["dispatch_ms"]
        out["ranks"][str(ranks)] = {"wall_s": stats([r["wall_s"] for r in runs]),
                                    "controller_wall_s": stats([r["controller_wall_s"]
                                                                for r in runs]),
                                    "runs": runs}
    out["dispatch_ms"] = stats(dispatch)
    out["gpies_2016"] = {**GPIES_2016, "cruncher": extrapolate(args.nodes)}
    print(json.dumps({k: v for k, v in out.items() if k != "ranks"}, indent=1))
    print("results:", save("super-cruncher", out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
