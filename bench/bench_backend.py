"""The processing backend's own costs, without the science.

    python bench/bench_backend.py [--instructions 5000] [--runs 3] [--jobs-datasets 30]

- **instructions/s**: N raw-frame instructions (each journaled, bad-file checked, queued) sent
  over the websocket by 4 instructor processes (pipelined, one connection each) into a fresh
  backend; the rate at which replies come back, timed from a common start signal, with SQLite and
  with MariaDB journaling; every one must be accepted and journaled.
- **scheduling overhead per PSF job**: datasets of 10 ``test`` jobs that exit at once; the time a
  job spends in the backend outside its subprocess: planning, journaling, queueing (the
  FileProcessor) plus taking it, preparing, recording and reporting it (the worker thread).
- **instruction -> cube known, minus the DRP's own time**: single-frame instructions on a simulated
  night with one built-in DRP worker: the time from sending to the FileProcessor knowing the cube,
  less the DRP's processing time from its log.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import save, stats  # noqa: E402

from cruncher.backend import client  # noqa: E402
from cruncher.backend.backend import Backend  # noqa: E402
from cruncher.config import load_settings  # noqa: E402
from cruncher.testing import mariadb  # noqa: E402



def make_settings(root: Path, **extra) -> object:
    return load_settings(search=False, env={}, overrides={
        "paths.root": str(root), "backend.port": "0", **extra})


def _sender(url: str, messages: list[str], results, ready, go) -> None:
    """One instructor process: ready, then on the signal send everything, pipelined."""
    ready.release()
    go.wait()
    results.put(client.send(url, messages, timeout=600))


def instructions_per_second(n: int, db_url_factory, connections: int = 4) -> dict:
    """Replies per second from a fresh backend to ``connections`` instructor processes."""
    import multiprocessing

    import numpy as np
    from astropy.io import fits

    with tempfile.TemporaryDirectory() as tmp, db_url_factory(Path(tmp)) as db_url:
        root = Path(tmp) / "data"
        raw = root / "raw" / "160315"
        raw.mkdir(parents=True)
        frames = []
        for i in range(20):
            path = raw / f"S20160315S{i + 1:04d}.fits"
            fits.writeto(path, np.zeros((4, 4), np.float32))
            frames.append(str(path))
        backend = Backend(make_settings(root, **{"database.url": db_url, "drp.mode": "external"}))
        backend.start()
        try:
            outdir = str(root / "reduced" / "bench")
            messages = [json.dumps({"id": f"bench-{i}", "files": [frames[i % len(frames)]],
                                    "outdir": outdir}) for i in range(n)]
            mp = multiprocessing.get_context("spawn")
            results, ready, go = mp.Queue(), mp.Semaphore(0), mp.Event()
            senders = [mp.Process(target=_sender, args=(backend.interface.url,
                                                        messages[k::connections], results, ready,
                                                        go)) for k in range(connections)]
            for proc in senders:
                proc.start()
            for _ in senders:
                ready.acquire()
            cpu0, start = os.times(), time.perf_counter()
            go.set()
            replies = [r for _ in senders for r in results.get(timeout=600)]
            seconds = time.perf_counter() - start
            cpu1 = os.times()
            for proc in senders:
                proc.join()
            accepted = sum(r.get("status") == "accepted" for r in replies)
            journaled = backend.journal.counts().get("instruction", {})
        finally:
            backend.stop()
    return {"seconds": seconds, "per_second": n / seconds, "accepted": accepted,
            "journaled": sum(journaled.values()), "sent": n,
            "server_cpu_ms_per_instruction": 1000 * (cpu1.user - cpu0.user + cpu1.system
                                                     - cpu0.system) / n}


@contextlib.contextmanager
def sqlite_url(tmp: Path):
    yield f"sqlite:///{tmp / 'cruncher.db'}"


def mariadb_url_factory(server: str):
    @contextlib.contextmanager
    def make(tmp: Path):
        with mariadb.scratch_database(server) as url:
            yield url
    return make


def scheduling_overhead(datasets: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        backend = Backend(make_settings(root, **{"drp.mode": "external", "backend.interface": "queue",
                                                 "psfsub.klip_workers": "1",
                                                 "psfsub.cadi_workers": "1"})).start()
        events = backend.subscribe()
        try:
            ids = set()
            for d in range(datasets):
                outdir = root / "reduced" / f"ds{d}"
                outdir.mkdir(parents=True)
                cubes = []
                for i in range(3):
                    cube = outdir / f"S20160315S{i + 1:04d}_spdc.fits"
                    cube.write_bytes(b"x")
                    cubes.append(str(cube))
                reply = backend.interface.send({"files": cubes, "outdir": str(outdir),
                                                "level": "cube",
                                                "psfsub": ["cadi", "klip", "contrast"],
                                                "params": {"test": {"action": "noop"}}})
                ids.add(reply["instruction_id"])
            done: set[str] = set()
            while done != ids:
                event = events.get(timeout=120)
                if event is None:
                    raise RuntimeError("instructions did not finish")
                if event.type == "finished":
                    done.add(event.job_id)
            worker_side = list(backend.workers.overheads)
            planning_s, planned = backend.file_processor.planning
        finally:
            backend.stop()
    planning_per_job = planning_s / max(planned, 1)
    return {"jobs": len(worker_side), "worker_side_ms": stats([w * 1000 for w in worker_side]),
            "planning_per_job_ms": planning_per_job * 1000,
            "total_median_ms": (statistics.median(worker_side) + planning_per_job) * 1000}


def cube_latency(frames: int) -> dict:
    """Single-frame instructions through the built-in DRP; overhead beyond the DRP's own time."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_drp import prepare

    work = Path(__file__).parent / "work" / "drp"
    night, science = prepare(work, max(frames, 3))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        shutil.copytree(night / "raw", root / "raw")
        shutil.copytree(night / "calibrations", root / "calibrations")
        backend = Backend(make_settings(root, **{"drp.workers": "1", "backend.interface": "queue",
                                                 "drp.poll_interval_s": "1.0"})).start()
        events = backend.subscribe()
        overheads = []
        try:
            outdir = root / "reduced" / "HD_95086" / "autoreduced" / "20160315_H_Spec"
            for raw in sorted((root / "raw").glob("*/*.fits")):
                if raw.name not in {s.name for s in science[:frames]}:
                    continue
                sent = time.monotonic()
                reply = backend.interface.send({"files": [str(raw)], "outdir": str(outdir)})
                while True:
                    event = events.get(timeout=120)
                    if event is None:
                        raise RuntimeError("no cube")
                    if event.type == "finished" and event.job_id == reply["instruction_id"]:
                        break
                known = next(k for r, _, k in backend.file_processor.latencies if r == str(raw))
                backend.reduction.logs.poll()
                name = next(n for n in backend.reduction.logs.seconds if raw.stem in n)
                overheads.append(known - sent - backend.reduction.logs.seconds[name])
        finally:
            backend.stop()
    return {"frames": len(overheads), "overhead_s": stats(overheads)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instructions", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs-datasets", type=int, default=30)
    parser.add_argument("--frames", type=int, default=5)
    args = parser.parse_args()
    out: dict = {}
    for name, factory in (("sqlite", lambda: sqlite_url), ("mariadb", None)):
        runs = []
        for _ in range(args.runs):
            if name == "mariadb":
                with mariadb.server_url() as server:
                    runs.append(instructions_per_second(args.instructions,
                                                        mariadb_url_factory(server)))
            else:
                runs.append(instructions_per_second(args.instructions, factory()))
            print(name, {k: round(v, 1) if isinstance(v, float) else v
                         for k, v in runs[-1].items()}, flush=True)
        out[f"instructions_{name}"] = {"per_second": stats([r["per_second"] for r in runs]),
                                       "all_accepted_and_journaled": all(
                                           r["accepted"] == r["journaled"] == r["sent"]
                                           for r in runs)}
    overhead = [scheduling_overhead(args.jobs_datasets) for _ in range(args.runs)]
    for o in overhead:
        print("scheduling", round(o["total_median_ms"], 2), "ms/job", flush=True)
    out["scheduling_overhead_ms"] = stats([o["total_median_ms"] for o in overhead])
    out["scheduling_detail"] = overhead
    latency = cube_latency(args.frames)
    print("instruction -> cube minus DRP", latency, flush=True)
    out["cube_latency_minus_drp"] = latency
    print(json.dumps(out, indent=1, default=str))
    print("results:", save("backend", out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
