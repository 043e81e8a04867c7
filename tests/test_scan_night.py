"""Acceptance of the realtime scanner and ``reprocess`` with every real part.

A simulated night is streamed file by file into the raw-data root (some files copied under a
temporary name and renamed, some written in place slowly) while ``cruncher scan`` runs as its own
process and instructs a real backend (websockets, built-in DRP workers, PSF-subtraction job
processes, the journal) on SQLite and on MariaDB. The scanner is killed with SIGKILL in the middle
of the night and started again. Then ``reprocess`` redoes the same night from raw.

The PSF-subtraction jobs run as the ``test`` algorithm (each writes one small product): the
scanner and the backend's planning are what is under test here; the real algorithms run through
the same backend in ``test_psfsub_backend``.
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from cruncher.backend.backend import Backend
from cruncher.db import schema
from cruncher.messages import Instruction
from cruncher.testing.streaming import stream
from tests.test_backend import jobs, settings_for

pytestmark = pytest.mark.slow
PARAMS = {"test": {"action": "write"}}
IDLE_MIN = 0.15          # the last sequence is finished 9 s after the last file


def test_a_streamed_night_with_a_restart_then_reprocessed(db_url, two_target_night, tmp_path):
    sim, truth = two_target_night
    sources = sorted((sim / "raw").glob("*/*.fits"))
    data = tmp_path / "data"
    (data / "calibrations").mkdir(parents=True)
    for master in (sim / "calibrations").glob("S*E000*.fits"):
        shutil.copy(master, data / "calibrations")
    backend = Backend(settings_for(data, drp__workers=2, database__url=db_url)).start()
    events = Events(backend)
    scanner = Scanner(data, db_url, backend.interface.url)
    try:
        scanner.start()

        # killed inside the first sequence; its next two frames land while it is down
        kill_at = [truth["frames"][p.name]["kind"] for p in sources].index("science") + 1

        def restart_mid_night(i: int, _source: Path) -> None:
            if i == kill_at:
                scanner.kill()
            if i == kill_at + 2:
                scanner.start()

        stream(sources, data / "raw", before=restart_mid_night)
        events.wait(lambda: _all_finished(backend, sequences=2), timeout=120,
                    what=lambda: f"the night's instructions to finish: {_states(backend)}\n"
                                 f"{scanner.output.read_text()[-3000:]}")
        scanner.stop()
        realtime = _check_night(backend, events, truth, sources, data)

        # the same night again from raw: the same products, from the same inputs
        before = _products(backend)
        events.clear()
        reply = _reprocess(data, db_url, backend.interface.url)
        sent = int(re.search(r"sent (\d+) instruction", reply).group(1))
        events.wait(lambda: events.finished >= sent, timeout=240,
                    what=f"{sent} reprocessing instructions to finish")
        assert _products(backend) == before
        assert events.made(kind="spdc") == realtime["cubes"]
        assert events.made(full_psf=True) == realtime["psf"]
        assert set(events.finished_states) == {"done"}
    finally:
        scanner.stop()
        backend.stop()


# --- checks -----------------------------------------------------------------------------------


def _check_night(backend, events: Events, truth: dict, sources: list[Path], data: Path) -> dict:
    """Every expected cube and PSF-subtraction product, each made once; returns them."""
    science = {p.name: truth["frames"][p.name] for p in sources
               if truth["frames"][p.name]["kind"] == "science"}
    cubes = events.made(kind="spdc")
    assert sorted(Path(c).name for c in cubes) == sorted(
        n.replace(".fits", "_spdc.fits") for n in science)
    assert events.duplicates() == [], "a product was made more than once"

    recipes = jobs(backend, "recipe")
    assert sorted(r["id"].split(":")[1] for r in recipes) == ["dark"] * 2 + ["quick_wavecal"] + \
        ["spectral_science"] * len(science), [r["id"] for r in recipes]
    assert {(r["state"], r["tries"]) for r in recipes} == {("done", 0)}, \
        [(r["id"], r["state"], r["tries"], r["error"]) for r in recipes if r["state"] != "done"]
    log = "\n".join(p.read_text() for p in (data / "logs").glob("gpi_drp_*.log"))
    for recipe in recipes:
        assert len(re.findall(rf"\[{re.escape(recipe['key'])}\] Reading recipe", log)) == 1

    full = [i for i in _instructions(backend) if i.mode == "spec" and not i.quicklook]
    by_target = {}
    for ins in full:
        objects = {truth["frames"][Path(f).name]["object"] for f in ins.files}
        assert len(objects) == 1, f"an instruction mixes targets: {objects}"
        by_target[objects.pop()] = sorted(Path(f).name for f in ins.files)
    assert by_target == {obj: sorted(n for n, f in science.items() if f["object"] == obj)
                         for obj in {f["object"] for f in science.values()}}

    psf = [j for j in jobs(backend, "psf") if not j["id"].startswith("ql:")]
    assert {(j["state"], j["tries"]) for j in psf} == {("done", 0)}, \
        [(j["id"], j["state"], j["tries"], j["error"]) for j in psf if j["state"] != "done"]
    per_dataset = Counter(json.loads(j["payload"])["outdir"] for j in psf)
    assert len(per_dataset) == 2 and len(set(per_dataset.values())) == 1, per_dataset
    made = events.made(full_psf=True)
    assert len(made) == len(psf), "one product per full PSF-subtraction job"
    quicklooks = Counter(json.loads(j["payload"])["outdir"] for j in jobs(backend, "psf")
                         if j["id"].startswith("ql:") and j["state"] == "done")
    assert set(quicklooks) == set(per_dataset), "each sequence had quicklook updates"

    scan_log = (data / "logs" / "cruncher.log").read_text()
    for source in sources:
        assert source.name in scan_log, f"the scanner's log says nothing of {source.name}"
    assert re.search(r"resumed: \d+ recent frame\(s\) replayed, state sequence", scan_log)
    return {"cubes": cubes, "psf": made}


def _instructions(backend) -> list[Instruction]:
    return [Instruction.from_dict(json.loads(row["payload"])["instruction"])
            for row in jobs(backend, "instruction")]


def _all_finished(backend, *, sequences: int) -> bool:
    full = [i for i in _instructions(backend) if i.mode == "spec" and not i.quicklook]
    return len(full) == sequences and all(j["state"] in ("done", "failed") for j in jobs(backend))


def _states(backend) -> list[tuple[str, str, str]]:
    return [(j["kind"], j["key"], j["state"]) for j in jobs(backend)]


def _products(backend) -> set[tuple[str, str, tuple[str, ...]]]:
    """(file name, kind, raw inputs) of every product on record but the quicklooks."""
    r, link, raw = schema.reduced, schema.raw2reduced, schema.raw
    query = (select(r.c.filename, r.c.kind, raw.c.filename)
             .select_from(r.outerjoin(link, link.c.reduced_id == r.c.id)
                          .outerjoin(raw, raw.c.id == link.c.raw_id)))
    inputs: dict[tuple[str, str], set[str]] = {}
    with backend.engine.connect() as conn:
        for name, kind, source in conn.execute(query):
            inputs.setdefault((name, kind), set()).update([source] if source else [])
    return {(name, kind, tuple(sorted(src))) for (name, kind), src in inputs.items()
            if not name.startswith("ql_")}


# --- the parts --------------------------------------------------------------------------------


class Events:
    """What the backend announced: products (by path, with the job that made them) and finished
    instructions."""

    def __init__(self, backend) -> None:
        self.subscription = backend.subscribe()
        self.clear()

    def clear(self) -> None:
        self.products: list[tuple[str, str, str]] = []      # (path, kind, job id)
        self.finished_states: list[str] = []

    @property
    def finished(self) -> int:
        return len(self.finished_states)

    def pump(self, timeout: float = 0.2) -> None:
        event = self.subscription.get(timeout=timeout)
        while event is not None:
            if event.type == "product":
                self.products.append((event.path, event.kind, event.job_id))
            elif event.type == "finished":
                self.finished_states.append(event.state)
            event = self.subscription.get(timeout=0.01)

    def wait(self, condition, *, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            if condition():
                self.pump()
                return
        raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")

    def made(self, *, kind: str | None = None, full_psf: bool = False) -> list[str]:
        return sorted(path for path, k, job in self.products
                      if (kind is None or k == kind) and (not full_psf or (
                          k != "spdc" and not job.startswith("ql:"))))

    def duplicates(self) -> list[str]:
        counts = Counter(path for path, _, job in self.products if not job.startswith("ql:"))
        return [path for path, n in counts.items() if n > 1]


class Scanner:
    """``cruncher scan`` as its own process, its output in a file."""

    def __init__(self, data: Path, db_url: str, backend_url: str) -> None:
        self.data, self.output = data, data / "scan-output.txt"
        self.command = [sys.executable, "-m", "cruncher", "scan", str(data / "raw"),
                        "--backend", backend_url, "--idle", str(IDLE_MIN),
                        "--params", json.dumps(PARAMS), *_common(data, db_url),
                        "--set", "realtime.settle_s=1", "--set", "realtime.rescan_interval_s=2"]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        starts = self.output.read_text().count("watching") if self.output.exists() else 0
        with open(self.output, "a") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while self.output.read_text().count("watching") == starts:
            assert self.process.poll() is None, self.output.read_text()
            assert time.monotonic() < deadline, "the scanner did not start"
            time.sleep(0.1)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0, self.output.read_text()


def _common(data: Path, db_url: str) -> list[str]:
    return ["--data-root", str(data), "--db-url", db_url]


def _reprocess(data: Path, db_url: str, backend_url: str) -> str:
    done = subprocess.run([str(Path(sys.executable).with_name("reprocess")), "--all",
                           "--from", "raw", "--params", json.dumps(PARAMS), "--backend",
                           backend_url, *_common(data, db_url)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
