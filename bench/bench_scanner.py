"""The realtime scanner's figures (issue F).

    python bench/bench_scanner.py [--frames 8] [--runs 3] [--files 1000]

- **latency**: full-size simulated raw frames (2048 x 2048, GPI headers) land one at a time in the
  watched raw-data root, taking turns between copy-then-rename and a slow in-place write (4 chunks,
  0.2 s apart). ``cruncher scan`` runs as its own process with its default settings; the backend
  runs in this process with its defaults (one built-in DRP worker, one cADI worker, SQLite). For
  each frame: from the moment the file is complete (renamed, or closed) to its cube being on disk
  (the backend's announcement of it), and to the quicklook PNG that includes its cube being on
  disk (the announcement of a quicklook PNG whose inputs include the frame). The next frame lands
  one second after the previous frame's quicklook (GPI's cadence is about 80 s, so the night never
  queues work on this machine). The first frame of a sequence has no quicklook (cADI needs two
  cubes). The master dark and wavelength solution are made beforehand, as the night's
  calibrations would be.
- **1,000 files at once**: a night of N raw frames (darks, then sequences of an arc and 39
  frames on 25 targets; real GPI headers, 64 x 64 pixels so that the disk is not what is
  measured) is written to a staging directory, then renamed into the watched root in one burst.
  The scanner (in this process: watchdog observer, ingest, state machine) instructs a real backend
  (its DRP queue written, no DRP running). Measured: from the first rename to every file being
  ingested and fed to the state machine and every instruction accepted by the backend; none may
  be missed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import save, stats  # noqa: E402

from cruncher.backend.backend import Backend  # noqa: E402
from cruncher.config import load_settings  # noqa: E402


def make_settings(root: Path, **extra):
    return load_settings(search=False, env={}, overrides={
        "paths.root": str(root), "backend.port": "0", **extra})


class Announcements(threading.Thread):
    """Every backend event, stamped with ``time.time()`` when it arrived."""

    def __init__(self, backend) -> None:
        super().__init__(daemon=True)
        self.subscription = backend.subscribe()
        self.events: list[tuple[float, object]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            event = self.subscription.get(timeout=0.1)
            if event is not None:
                self.events.append((time.time(), event))

    def first(self, match, timeout: float = 300.0) -> float:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for stamp, event in self.events[seen:]:
                if match(event):
                    return stamp
            seen = len(self.events)
            time.sleep(0.01)
        raise TimeoutError("the backend did not announce it")


# --- latency --------------------------------------------------------------------------------------


def latency_run(frames: int) -> list[dict]:
    from bench_drp import prepare

    from cruncher.testing.streaming import WAYS, land

    night, science = prepare(Path(__file__).parent / "work" / f"scanner-{frames}", frames)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        shutil.copytree(night / "calibrations", data / "calibrations")
        backend = Backend(make_settings(data)).start()
        heard = Announcements(backend)
        heard.start()
        scanner = _scanner(data, backend.interface.url)
        try:
            for i, source in enumerate(science[:frames]):
                path = land(source, data / "raw" / source.parent.name, WAYS[i % 2])
                closed = time.time()
                cube_name = path.name.replace(".fits", "_spdc.fits")
                cube_at = heard.first(lambda e: e.type == "product" and e.kind == "spdc"
                                      and Path(e.path).name == cube_name)
                row = {"frame": path.name, "way": WAYS[i % 2], "cube_s": cube_at - closed}
                if i >= 1:
                    png_at = heard.first(lambda e: e.type == "product"
                                         and e.kind == "quicklook_png"
                                         and any(Path(r).name == path.name for r in e.inputs))
                    row["quicklook_png_s"] = png_at - closed
                rows.append(row)
                print(f"  {row}", flush=True)
                time.sleep(1.0)
        finally:
            scanner.terminate()
            scanner.wait(timeout=30)
            heard.stop.set()
            backend.stop()
    return rows


def _scanner(data: Path, url: str) -> subprocess.Popen:
    out = open(data / "scan-output.txt", "w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("cruncher")), "scan",
                             str(data / "raw"), "--backend", url, "--data-root", str(data)],
                            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "watching" not in (data / "scan-output.txt").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((data / "scan-output.txt").read_text())
        time.sleep(0.1)
    return proc


# --- 1,000 files at once --------------------------------------------------------------------------


def write_night(directory: Path, n: int) -> list[Path]:
    """``n`` small raw frames with GPI headers: 20 darks, then (arc + 39 frames) per target."""
    import numpy as np

    from cruncher.instruments.gpi.frames import FrameInfo, write_raw_frame

    pixels = np.zeros((64, 64), np.float32)
    clock = dt.datetime(2016, 3, 15, 0, 0)
    paths = []
    for number in range(1, n + 1):
        if number <= 20:
            fields = dict(object="Dark", obstype="DARK", obsclass="dayCal", coronagraph=False,
                          itime=60.0 if number <= 10 else 30.0)
        else:
            target, step = divmod(number - 21, 40)
            fields = dict(object=f"HIP {10000 + target}", ra_deg=10.0 * target % 360,
                          dec_deg=-60.0, observation=target + 1)
            if step == 0:
                fields.update(obstype="ARC", obsclass="acqCal", gcallamp="Ar", itime=30.0)
        info = FrameInfo(number=number, start=clock, **fields)
        paths.append(write_raw_frame(directory, info, data=pixels))
        clock = info.end + dt.timedelta(seconds=20)
    return paths


def burst_run(n: int) -> dict:
    from cruncher.db import engine as dbengine
    from cruncher.instructors.arrivals import Arrivals
    from cruncher.instructors.cli import backend_sender
    from cruncher.instructors.realtime import Scanner, layout_from, run

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        staged = write_night(Path(tmp) / "staging" / "160315", n)
        settings = make_settings(data, **{"drp.mode": "external"})
        backend = Backend(settings).start()
        engine = dbengine.make_engine(settings.database.url)
        scanner = Scanner(engine=engine, layout=layout_from(settings),
                          send=backend_sender(backend.interface.url, ""), max_age_s=1e12)
        arrivals = Arrivals(data / "raw").start()
        stop = threading.Event()
        loop = threading.Thread(target=run, args=(scanner, arrivals, stop), daemon=True)
        loop.start()
        try:
            night = data / "raw" / "160315"
            night.mkdir(parents=True)
            time.sleep(0.5)                       # the watch on the new directory exists
            began = time.time()
            for path in staged:
                os.rename(path, night / path.name)
            landed = time.time() - began
            deadline = time.monotonic() + 600
            while scanner.frames_handled < n or scanner.unsent:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            handled = time.time() - began
            counts = dict(scanner.counts)
        finally:
            stop.set()
            loop.join(timeout=30)
            arrivals.stop()
            backend.stop()
            engine.dispose()
    return {"files": n, "renamed_in_s": landed, "all_handled_s": handled,
            "files_per_s": n / handled, "ingested": counts.get("ingested", 0),
            "missed": n - counts.get("ingested", 0), "instructions": counts.get(
                "instructions sent", 0), "counts": counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8, help="science frames per latency run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    out: dict = {}
    if not args.skip_latency:
        rows = []
        for run_number in range(args.runs):
            print(f"latency run {run_number + 1}", flush=True)
            rows += latency_run(args.frames)
        out["latency"] = {"cube_s": stats([r["cube_s"] for r in rows]),
                          "quicklook_png_s": stats([r["quicklook_png_s"] for r in rows
                                                    if "quicklook_png_s" in r]),
                          "frames": rows}
    bursts = []
    for run_number in range(args.runs):
        bursts.append(burst_run(args.files))
        print(f"burst run {run_number + 1}: " + json.dumps(
            {k: round(v, 2) if isinstance(v, float) else v for k, v in bursts[-1].items()}),
            flush=True)
    out["burst"] = {"files": args.files,
                    "files_per_s": stats([b["files_per_s"] for b in bursts]),
                    "all_handled_s": stats([b["all_handled_s"] for b in bursts]),
                    "none_missed": all(b["missed"] == 0 for b in bursts), "runs": bursts}
    print(json.dumps({k: v for k, v in out.items()}, indent=1, default=str)[:3000])
    print("results:", save("scanner", out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
