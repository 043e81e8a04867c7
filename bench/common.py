"""Shared by the benchmark scripts: repeated timing, statistics, machine description, results."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gb": round(mem_gb, 1), "python": platform.python_version()}


def repeat(fn: Callable[[], Any], runs: int, setup: Callable[[], Any] | None = None) -> dict:
    """Run ``fn`` ``runs`` times (``setup`` before each, untimed); median, min, max in seconds."""
    times = []
    for _ in range(runs):
        if setup:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "runs": runs, "all_s": times}


def stats(values: list[float]) -> dict:
    """Median, min, max and count of a list of measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def save(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/<date>-<name>.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC)
    path = RESULTS / f"{stamp:%Y-%m-%d}-{name}.json"
    payload = {"benchmark": name, "date": stamp.isoformat(timespec="seconds"),
               "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def drop_page_cache() -> bool:
    """Drop the kernel's page cache when allowed (root on a real kernel); tell whether it worked."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False
