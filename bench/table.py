"""The benchmarks' results as one Markdown table, next to the Data Cruncher paper's figures.

Each benchmark's results file (``bench/results/<date>-<name>.json``) has its own shape; one small
function per benchmark turns it into rows. A figure a results file lacks is left out, not
invented, so a partial run still renders.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import stats  # noqa: E402

#: What Wang et al. (2018) report for the same steps, on GPIES's own machines.
PAPER = {"quicklook": "~1 min", "first_klip": "~10 min after the sequence",
         "contrast": "~1 h after the sequence", "campaign_cpu": "16,560 CPU-h (2016 campaign)",
         "campaign_wall": "22.9 h on 720 cores"}


@dataclass(frozen=True)
class Row:
    benchmark: str
    figure: str
    median: str
    range: str = ""
    runs: str = ""
    memory: str = ""
    paper: str = ""


def seconds(value: float) -> str:
    """A duration a person reads at a glance: ms, s, min or h."""
    if value != value:          # NaN
        return "n/a"
    if value < 1:
        return f"{value * 1000:.3g} ms"
    if value < 120:
        return f"{value:.3g} s"
    if value < 7200:
        return f"{value / 60:.3g} min"
    return f"{value / 3600:.3g} h"


def number(value: float, unit: str = "") -> str:
    return f"{value:,.4g}{(' ' + unit) if unit else ''}"


def gigabytes(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} GB"


def _stat(d: dict, fmt: Callable[[float], str]) -> tuple[str, str, str]:
    """(median, min - max, n) of either statistics shape the scripts write."""
    if "median_s" in d:
        d = {"median": d["median_s"], "min": d["min_s"], "max": d["max_s"], "n": d["runs"]}
    return fmt(d["median"]), f"{fmt(d['min'])} - {fmt(d['max'])}", str(d["n"])


def _row(benchmark: str, figure: str, d: dict, fmt: Callable[[float], str] = seconds,
         memory: str = "", paper: str = "") -> Row:
    median, spread, n = _stat(d, fmt)
    return Row(benchmark, figure, median, spread, n, memory, paper)


def drp(r: dict) -> Iterator[Row]:
    memory = gigabytes(r["peak_memory_mib"]["median"] * 2**20 / 1e9) if "peak_memory_mib" in r \
        else ""
    cores = r.get("cores", 1)
    yield _row("DRP", f"raw frame -> cube, warm worker ({cores} core)", r["frame_seconds_warm"],
               memory=memory)
    yield _row("DRP", "raw frame -> cube, a new worker's first frame", r["frame_seconds_cold"],
               memory=memory)
    if isinstance(r.get("gpu"), dict):
        yield _row("DRP", "raw frame -> cube on the GPU (cupy)", r["gpu"]["frame_seconds_warm"])
    night = r.get("night")
    if night:
        yield _row("DRP", f"simulate a night of {night['science_frames']} frames "
                          f"({night['processes']} processes)", night["seconds"])


def ingest(r: dict) -> Iterator[Row]:
    for db in ("sqlite", "mariadb"):
        for cache in ("warm", "cold"):
            if cache in r.get(db, {}):
                yield _row("ingest", f"{r['files']:,} raw headers -> {db}, {cache} page cache",
                           r[db][cache])


def backend(r: dict) -> Iterator[Row]:
    for db in ("sqlite", "mariadb"):
        if f"instructions_{db}" in r:
            yield _row("backend", f"instructions/s over the websocket, {db} journal",
                       r[f"instructions_{db}"]["per_second"], lambda v: number(v, "/s"))
    if "scheduling_overhead_ms" in r:
        yield _row("backend", "scheduling overhead per PSF job", r["scheduling_overhead_ms"],
                   lambda v: seconds(v / 1000))
    if "cube_latency_minus_drp" in r:
        yield _row("backend", "instruction -> cube known, less the DRP's own time",
                   r["cube_latency_minus_drp"]["overhead_s"])


def scanner(r: dict) -> Iterator[Row]:
    latency = r.get("latency", {})
    if "cube_s" in latency:
        yield _row("scanner", "file complete -> its cube on disk", latency["cube_s"])
    if "quicklook_png_s" in latency:
        yield _row("scanner", "file complete -> quicklook PNG with it", latency["quicklook_png_s"],
                   paper=PAPER["quicklook"])
    burst = r.get("burst")
    if burst:
        missed = "none missed" if burst.get("none_missed") else "FILES MISSED"
        yield _row("scanner", f"{burst['files']:,} files at once -> all handled ({missed})",
                   burst["all_handled_s"])


REALTIME = {"cube": ("file landed -> its cube", ""),
            "quicklook": ("file landed -> quicklook with it", PAPER["quicklook"]),
            "first KLIP": ("sequence end -> first KLIP", PAPER["first_klip"]),
            "calibrated contrast": ("sequence end -> calibrated contrast", PAPER["contrast"])}


def realtime(r: dict) -> Iterator[Row]:
    night = "--full night" if r["night"].get("full") else "default night"
    memory = gigabytes(r["peak_gb"]["median"])
    for key, (label, paper) in REALTIME.items():
        if key in r["latency_s"]:
            yield _row("demo", f"{label} ({night})", r["latency_s"][key], memory=memory,
                       paper=paper)
    yield _row("demo", f"whole demo, {night} ({'all' if r['all_succeeded'] else 'NOT all'} "
                       "succeeded)", r["wall_s"], memory=memory)
    if r["snr"]["n"]:
        yield _row("demo", "injected planet's SNR", r["snr"], lambda v: f"{v:.1f}")


def psfsub(r: dict) -> Iterator[Row]:
    cubes = r["dataset"]["cubes"]
    shape = " x ".join(str(n) for n in r["dataset"]["shape"])
    for algorithm, label in (("cadi", "cADI"), ("cadi_sdi", "cADI after SDI")):
        if algorithm in r.get("cadi", {}):
            found = r["cadi"][algorithm]
            yield _row("PSF subtraction", f"{label}, {cubes} cubes of {shape}", found["wall_s"],
                       memory=gigabytes(found["peak_gb"]["median"]))
    for n, found in r.get("klip_general", {}).items():
        engine = found.get("engine") or "engine not recorded"
        yield Row("PSF subtraction", f"KLIP general, {n} cubes, {engine}"
                                     f"{' (lite)' if found['lite'] else ''}",
                  seconds(found["wall_s"]), runs="1", memory=gigabytes(found["peak_gb"]))
    suite = r.get("suite")
    if suite:
        jobs = len(suite["jobs"])
        yield Row("PSF subtraction", f"whole suite of one dataset ({suite['cubes']} cubes, "
                                     f"{jobs} jobs, {suite['klip_workers']} KLIP worker, "
                                     f"{suite.get('engine', 'KLIP engine not recorded')}; "
                                     f"{suite['state']})", seconds(suite["wall_s"]), runs="1",
                  memory=gigabytes(suite["peak_gb"]), paper=PAPER["contrast"])


def klip_engines(r: dict) -> Iterator[Row]:
    for n in sorted(r["sizes"], key=int):
        entry = r["sizes"][n]
        for engine, label in (("fast", "fast engine"), ("pyklip", "pyKLIP")):
            found = entry.get(engine, {})
            if found.get("runs"):
                walls = [run["wall_s"] for run in found["all"]]
                yield _row("KLIP engines", f"KLIP general, {n} cubes, {label}", stats(walls),
                           memory=gigabytes(found["median_peak_gb"]),
                           paper=PAPER["first_klip"] if engine == "pyklip" and n == "40" else "")
        if "speedup" in entry:
            yield Row("KLIP engines", f"KLIP general, {n} cubes: pyKLIP / fast",
                      f"{entry['speedup']:.2f}x time", memory=f"{entry['memory_ratio']:.2f}x memory")


def super_cruncher(r: dict) -> Iterator[Row]:
    campaign = r["campaign"]
    for ranks, found in sorted(r["ranks"].items(), key=lambda item: int(item[0])):
        yield _row("super_cruncher", f"{campaign['sequences']} sequences x {campaign['frames']} "
                                     f"frames, raw -> cubes + cADI, {ranks} MPI rank(s)",
                   found["wall_s"])
    if "dispatch_ms" in r:
        yield _row("super_cruncher", "rank 0's dispatch time per task", r["dispatch_ms"],
                   lambda v: seconds(v / 1000))
    extrapolated = r.get("gpies_2016", {}).get("cruncher")
    if extrapolated:
        sources = [Path(f).stem for f in extrapolated["assumptions"].get("measured_in", [])]
        yield Row("super_cruncher", "GPIES 2016 campaign, extrapolated: CPU time"
                  + (f" (costs from {', '.join(sources)})" if sources else ""),
                  f"{extrapolated['cpu_hours']['total']:,.0f} CPU-h", paper=PAPER["campaign_cpu"])
        for nodes, hours in extrapolated["wall_h"].items():
            cores = int(nodes) * extrapolated["assumptions"]["cores_per_node"]
            yield Row("super_cruncher", f"GPIES 2016 campaign, extrapolated: wall time on "
                                        f"{cores} cores", f"{hours:.3g} h",
                      paper=PAPER["campaign_wall"] if cores == 720 else "")


RENDERERS: dict[str, Callable[[dict], Iterator[Row]]] = {
    "drp": drp, "ingest": ingest, "backend": backend, "scanner": scanner, "realtime": realtime,
    "psfsub": psfsub, "klip-engines": klip_engines, "super-cruncher": super_cruncher}


def rows(name: str, result: dict) -> list[Row]:
    """The rows of one benchmark's results; a figure that is not there is left out."""
    out: list[Row] = []
    try:
        for row in RENDERERS[name](result):
            out.append(row)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        pass        # an interrupted benchmark wrote only part of its results
    return out


LABELS = {"drp": "DRP", "ingest": "ingest", "backend": "backend", "scanner": "scanner",
          "realtime": "demo", "psfsub": "PSF subtraction", "klip-engines": "KLIP engines",
          "super-cruncher": "super_cruncher"}


def whole(name: str, entry: dict) -> Row:
    """The benchmark script as a whole, as the runner measured it: every run, set-up included."""
    return Row(LABELS.get(name, name), "the whole benchmark (all its runs and set-up)",
               seconds(entry["wall_s"]), runs="1", memory=gigabytes(entry.get("peak_gb")))


HEADER = ("benchmark", "figure", "median", "min - max", "runs", "peak memory", "the paper")


def markdown(table: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in table:
        cells = (row.benchmark, row.figure, row.median, row.range, row.runs, row.memory, row.paper)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"
