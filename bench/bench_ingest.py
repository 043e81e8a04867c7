"""Time to ingest N raw-frame headers (2048 x 2048 float32 files) into SQLite and MariaDB.

    python bench/bench_ingest.py [--files 1000] [--runs 3] [--workdir bench/work/ingest]

Each run ingests into a fresh, empty database. The frames are written once (about 16 MB each)
and kept in the work directory for later runs. Reported: median, min and max over the runs, warm
page cache, and cold when the kernel lets us drop it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import drop_page_cache, repeat, save  # noqa: E402

from cruncher.db import engine as dbengine  # noqa: E402
from cruncher.db.ingest import ingest  # noqa: E402
from cruncher.instruments.gpi.frames import FrameInfo, write_raw_frame  # noqa: E402
from cruncher.testing import mariadb  # noqa: E402


def write_frames(directory: Path, n: int) -> list[Path]:
    existing = sorted(directory.glob("S*.fits")) if directory.exists() else []
    if len(existing) == n:
        return existing
    data = np.random.default_rng(1).normal(100, 10, (2048, 2048)).astype(np.float32)
    start = dt.datetime(2016, 1, 1, 0, 0)
    paths = []
    for i in range(n):
        info = FrameInfo(number=i + 1, start=start + dt.timedelta(seconds=80 * i),
                         object=f"HD {95086 + i // 40}")
        paths.append(write_raw_frame(directory / f"{info.start:%y%m%d}", info, data=data))
    return paths


def time_backend(url_factory, raw: Path, runs: int, cold: bool) -> dict:
    """Median ingest time into fresh databases from ``url_factory()`` (a context manager)."""
    results = {}
    for cache in ("warm", "cold") if cold else ("warm",):
        times, reingest = [], []
        for _ in range(runs):
            with url_factory() as url:
                eng = dbengine.make_engine(url)
                dbengine.init_db(eng)
                if cache == "cold":
                    drop_page_cache()
                box = {}
                stats = repeat(lambda: box.setdefault("r", ingest(eng, [raw], progress=False)), 1)
                assert len(box["r"].added) > 0 and not box["r"].failed, box["r"].summary()
                times.append(stats["median_s"])
                again = repeat(lambda: ingest(eng, [raw], progress=False), 1)
                reingest.append(again["median_s"])
                eng.dispose()
        times.sort()
        reingest.sort()
        results[cache] = {"median_s": times[len(times) // 2], "min_s": times[0],
                          "max_s": times[-1], "runs": runs,
                          "reingest_unchanged_median_s": reingest[len(reingest) // 2]}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "work" / "ingest")
    args = parser.parse_args()
    raw = args.workdir / "raw"
    print(f"writing {args.files} raw frames under {raw} (kept for later runs) ...", flush=True)
    files = write_frames(raw, args.files)
    size_gb = sum(p.stat().st_size for p in files) / 1e9
    cold = drop_page_cache()
    print(f"{len(files)} files, {size_gb:.1f} GB; cold-cache runs: {'yes' if cold else 'no'}")

    def sqlite_url():
        import contextlib

        @contextlib.contextmanager
        def make():
            with tempfile.TemporaryDirectory() as tmp:
                yield f"sqlite:///{tmp}/cruncher.db"
        return make()

    out = {"files": len(files), "gigabytes": round(size_gb, 2)}
    out["sqlite"] = time_backend(sqlite_url, raw, args.runs, cold)
    print("sqlite ", out["sqlite"])
    with mariadb.server_url() as server:
        out["mariadb"] = time_backend(lambda: mariadb.scratch_database(server), raw, args.runs,
                                      cold)
    print("mariadb", out["mariadb"])
    print("results:", save("ingest", out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
