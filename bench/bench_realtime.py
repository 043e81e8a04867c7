"""The realtime promises, measured on whole simulated nights: ``cruncher demo``, several times.

    python bench/bench_realtime.py [--runs 3] [--full] [--frames N] [--cadence 2]

Each run is a fresh ``cruncher demo --json`` process (simulated night, backend, built-in DRP
worker, realtime scanner, fast KLIP engine, SQLite) in its own work directory; its peak memory
is the PSS of its process tree. Reported per latency (file landed -> its cube, -> a quicklook
with it; sequence end -> first KLIP, -> calibrated contrast): the median, min and max over every
value of every run, and the median of each run; with the planet's SNR and each run's wall time.
The paper's figures for the same steps: quicklook within ~1 min, first KLIP ~10 min after the
sequence, contrast curves within ~1 h.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import TreeMemory, save, stats  # noqa: E402

CRUNCHER = Path(sys.executable).parent / "cruncher"


def demo_run(extra: list[str]) -> dict:
    """One demo, start to end; its summary, wall time and peak memory."""
    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as tmp:
        summary = Path(tmp) / "summary.json"
        command = [str(CRUNCHER), "demo", "--workdir", str(Path(tmp) / "night"),
                   "--json", str(summary), *extra]
        began = time.perf_counter()
        with open(Path(tmp) / "demo.log", "wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            with TreeMemory(proc.pid, interval=1.0) as memory:
                code = proc.wait()
        wall = time.perf_counter() - began
        if not summary.exists():
            tail = (Path(tmp) / "demo.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"cruncher demo failed ({code}) without a summary:\n{tail}")
        report = json.loads(summary.read_text())
    return {"exit_code": code, "wall_s": round(wall, 1), "peak_gb": round(memory.peak / 1e9, 2),
            "latencies": report["latencies"], "products": report["products"],
            "snr": (report["planet"] or {}).get("snr"), "missing": report["missing"],
            "failures": report["failures"]}


def aggregate(runs: list[dict]) -> dict:
    """Per latency: statistics over every value of every run, and each run's median."""
    out = {}
    for measure in runs[0]["latencies"]:
        values = [v for r in runs for v in r["latencies"].get(measure, [])]
        if values:
            out[measure] = {**stats(values), "run_medians": [
                statistics.median(r["latencies"][measure]) for r in runs
                if r["latencies"].get(measure)]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="the demo's --full night")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--cadence", type=float, default=2.0, metavar="SECONDS")
    args = parser.parse_args()
    extra = ["--cadence", str(args.cadence)] + (["--full"] if args.full else []) + (
        ["--frames", str(args.frames)] if args.frames else [])
    runs = []
    for i in range(args.runs):
        runs.append(demo_run(extra))
        print(f"run {i + 1}: exit {runs[-1]['exit_code']}, {runs[-1]['wall_s']:.0f} s, "
              f"{runs[-1]['peak_gb']:.2f} GB, SNR {runs[-1]['snr']}", flush=True)
    payload = {"night": {"full": args.full, "frames": args.frames, "cadence_s": args.cadence},
               "latency_s": aggregate(runs), "wall_s": stats([r["wall_s"] for r in runs]),
               "peak_gb": stats([r["peak_gb"] for r in runs]),
               "snr": stats([r["snr"] for r in runs if r["snr"] is not None] or [float("nan")]),
               "all_succeeded": all(r["exit_code"] == 0 for r in runs), "runs": runs}
    print("results:", save("realtime", payload))
    return 0 if payload["all_succeeded"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
