"""Every benchmark in one command; results in bench/results/<date>-<machine>.json and .md.

    python bench/run.py [--preset quick|standard] [--only NAME ...] [--skip NAME ...]
                        [--resume [FILE]] [--readme]
    python bench/run.py --render FILE [FILE ...] [--readme --section NAME]

Presets (the times are this project's 2-core machine's):
  standard  the sizes the issues quote: 40-cube sequences of 37 x 281 x 281, KLIP at 10/20/40
            cubes with pyKLIP and the fast engine, 3 runs each, the --full demo night, the
            whole suite of a 40-cube dataset. About 6 hours; pyKLIP is most of it.
  quick     the same benchmarks at sizes that finish in about an hour: KLIP at 10 cubes, the
            suite on 10 cubes, the default demo night, fewer files and instructions.

Each benchmark runs as its own process (its output is shown and kept in bench/work/logs); the
runner records its wall time and the peak memory (PSS) of its whole process tree, and writes the
combined results and the Markdown table after every benchmark, so an interrupted run keeps what
it measured and --resume carries on with the rest. A benchmark that fails is recorded with its
log's tail and the others still run; the exit status is then 1. --readme puts the table into
README.md between the markers of --section.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import table  # noqa: E402
from common import RESULTS, RESULTS_ENV, TreeMemory, machine  # noqa: E402

BENCH = Path(__file__).parent
README = BENCH.parent / "README.md"
LOGS = BENCH / "work" / "logs"


@dataclass(frozen=True)
class Step:
    """One benchmark script; ``name`` is also the name its results file is saved under."""
    name: str
    script: str
    what: str
    args: dict[str, list[str]] = field(default_factory=dict)    # preset -> arguments


STEPS = (
    Step("drp", "bench_drp.py", "raw frame -> cube, per frame",
         {"quick": ["--frames", "3", "--night-frames", "10"], "standard": []}),
    Step("ingest", "bench_ingest.py", "raw headers into SQLite and MariaDB",
         {"quick": ["--files", "200"], "standard": []}),
    Step("backend", "bench_backend.py", "instructions/s, scheduling overhead",
         {"quick": ["--instructions", "2000", "--jobs-datasets", "10"], "standard": []}),
    Step("scanner", "bench_scanner.py", "realtime scanner latencies, 1,000 files at once",
         {"quick": ["--frames", "4"], "standard": []}),
    Step("realtime", "bench_realtime.py", "whole simulated nights (cruncher demo)",
         {"quick": ["--runs", "3"], "standard": ["--runs", "3", "--full"]}),
    Step("psfsub", "bench_psfsub.py", "cADI, the whole PSF-subtraction suite of a dataset",
         {"quick": ["--cubes", "--suite-cubes", "10"], "standard": ["--cubes"]}),
    Step("klip-engines", "bench_klip_engines.py", "KLIP: pyKLIP and the fast engine",
         {"quick": ["--cubes", "10"], "standard": []}),
    # after drp, psfsub and klip-engines: its campaign extrapolation uses their figures
    Step("super-cruncher", "bench_super_cruncher.py", "MPI campaign runs, dispatch overhead",
         {"quick": ["--sequences", "2", "--frames", "3"], "standard": []}),
)
NAMES = [step.name for step in STEPS]


def machine_slug(described: dict) -> str:
    """``amd-epyc-2cpu``: what the results file is named after."""
    cpu = re.sub(r"\((r|tm)\)|processor|cpu|@.*", "", described["cpu"].lower())
    cpu = re.sub(r"[^a-z0-9]+", "-", cpu).strip("-") or "unknown"
    return f"{cpu}-{described['cores']}cpu"


def run_step(step: Step, preset: str, stamp: str) -> dict:
    """Run one benchmark script; its results, wall time, peak memory and exit status."""
    command = [sys.executable, str(BENCH / step.script), *step.args[preset]]
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{stamp}-{step.name}.log"
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-") as results, open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, RESULTS_ENV: results, "PYTHONUNBUFFERED": "1"})
        with TreeMemory(proc.pid, interval=1.0) as memory:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                print(f"  [{step.name} {time.perf_counter() - began:5.0f} s] {line}", end="",
                      flush=True)
            code = proc.wait()
        found = sorted(Path(results).glob(f"*-{step.name}.json"))
        result = json.loads(found[-1].read_text()) if found else None
    entry = {"command": [Path(command[0]).name, *command[1:]], "exit_code": code,
             "wall_s": round(time.perf_counter() - began, 1),
             "peak_gb": round(memory.peak / 1e9, 2), "log": str(log_path), "result": result}
    if code != 0:
        entry["log_tail"] = log_path.read_text(errors="replace")[-2000:]
    return entry


def to_resume(preset: str, slug: str, given: Path | None) -> Path | None:
    """The results file ``--resume`` carries on: the one given, or this machine's newest of the
    same preset (a long run may span days and sessions)."""
    if given is not None:
        return given
    for path in sorted(RESULTS.glob(f"*-{slug}.json"), reverse=True):
        if json.loads(path.read_text()).get("preset") == preset:
            return path
    return None


def render(combined: dict) -> str:
    """The Markdown of a combined results file: a heading line, then the table."""
    described = combined["machine"]
    steps = sorted(combined["steps"].items(),
                   key=lambda item: NAMES.index(item[0]) if item[0] in NAMES else len(NAMES))
    rows = []
    for name, entry in steps:
        rows += table.rows(name, entry["result"]) if entry.get("result") else []
        rows += [table.whole(name, entry)] if "wall_s" in entry else []
    failed = [name for name, entry in steps if entry.get("exit_code")]
    how = (f"collected from {len(combined['files'])} results files of separate runs"
           if combined["preset"] == "collected"
           else f"with `python bench/run.py --preset {combined['preset']}`")
    head = (f"Measured {combined['date']} {how} on {described['cpu']}, {described['cores']} "
            f"cores, {described['memory_gb']} GB, Python {described['python']}.")
    if failed:
        head += f" **Failed:** {', '.join(failed)} (see the results file)."
    return head + "\n\n" + table.markdown(rows)


def collect(paths: list[Path]) -> dict:
    """A combined results file assembled from earlier files (per benchmark, or combined); one
    combined file is itself."""
    if len(paths) == 1 and "steps" in (found := json.loads(paths[0].read_text())):
        return found
    combined: dict = {"preset": "collected", "steps": {}, "files": [str(p) for p in paths]}
    dates: set[str] = set()
    cpus: set[str] = set()
    for path in paths:
        found = json.loads(path.read_text())
        if "steps" in found:
            combined["steps"].update(found["steps"])
        else:
            combined["steps"][found["benchmark"]] = {"result": found, "exit_code": 0}
        combined.setdefault("machine", found["machine"])
        dates.add(found["date"][:10])
        cpus.add(found["machine"]["cpu"])
    combined["date"] = " to ".join(sorted(dates)[::max(len(dates) - 1, 1)])
    combined["machine"] = {**combined["machine"], "cpu": " or ".join(sorted(cpus))}
    return combined


def update_readme(markdown: str, section: str, readme: Path = README) -> None:
    start, end = f"<!-- bench:{section}:start -->", f"<!-- bench:{section}:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{readme} has no {start} ... {end} markers")
    before, rest = text.split(start, 1)
    readme.write_text(before + start + "\n" + markdown + rest[rest.index(end):])


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("quick", "standard"), default="standard")
    parser.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME",
                        help=f"run only these benchmarks ({', '.join(NAMES)})")
    parser.add_argument("--skip", nargs="+", choices=NAMES, default=[], metavar="NAME",
                        help="run all but these")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="FILE",
                        help="carry on FILE (default: this machine's newest results of the same "
                             "preset), keeping what it measured; run only what is missing "
                             "or failed")
    parser.add_argument("--readme", action="store_true", help="put the table into README.md")
    parser.add_argument("--section", default="latest",
                        help="README section the table goes to (markers bench:NAME:start/end)")
    parser.add_argument("--render", nargs="+", type=Path, metavar="FILE",
                        help="run nothing: render the table of these results files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.render:
        markdown = render(collect(args.render))
        print(markdown)
        if args.readme:
            update_readme(markdown, args.section)
        return 0
    described = machine()
    today = dt.datetime.now(dt.UTC)
    slug = machine_slug(described)
    path = RESULTS / f"{today:%Y-%m-%d}-{slug}.json"
    if args.resume:
        given = None if args.resume is True else Path(args.resume)
        path = to_resume(args.preset, slug, given) or path
    combined = json.loads(path.read_text()) if args.resume and path.exists() else {
        "benchmark": "all", "preset": args.preset, "date": f"{today:%Y-%m-%d}",
        "machine": described, "steps": {}}
    if combined["preset"] != args.preset:
        raise SystemExit(f"{path} is not a --preset {args.preset} run: resume it with its own")
    chosen = [s for s in STEPS if (not args.only or s.name in args.only) and s.name not in args.skip]
    for number, step in enumerate(chosen, 1):
        if args.resume and combined["steps"].get(step.name, {}).get("exit_code") == 0:
            print(f"[{number}/{len(chosen)}] {step.name}: measured "
                  f"{combined['steps'][step.name].get('date', 'earlier')}, kept")
            continue
        print(f"[{number}/{len(chosen)}] {step.name}: {step.what}", flush=True)
        entry = run_step(step, args.preset, f"{today:%Y%m%dT%H%M}")
        entry["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        combined["steps"][step.name] = entry
        dates = sorted(e["date"][:10] for e in combined["steps"].values() if "date" in e)
        combined["date"] = " to ".join(dict.fromkeys([dates[0], dates[-1]]))
        print(f"[{number}/{len(chosen)}] {step.name}: exit {entry['exit_code']} after "
              f"{table.seconds(entry['wall_s'])}, peak {entry['peak_gb']:.2f} GB", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(combined, indent=1) + "\n")
        path.with_suffix(".md").write_text(render(combined))
    markdown = render(combined)
    print("\n" + markdown + f"\nresults: {path}\ntable:   {path.with_suffix('.md')}")
    if args.readme:
        update_readme(markdown, args.section)
    return 1 if any(e.get("exit_code") for e in combined["steps"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
