"""``super_cruncher`` on a small simulated campaign, with real backends, DRP and MPI ranks.

The reference is the single-machine way: ``reprocess --all`` into a backend. The same instructions,
exported, then go through ``mpiexec -n 3 super_cruncher`` and through a one-process run killed
midway and resumed; both must make exactly the reference's products (names and pixels). PSF
subtraction is cADI only, to keep CI short: the KLIP jobs take the same path through the backend.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import text

from cruncher.backend.backend import Backend
from cruncher.db import queries
from cruncher.db.engine import make_engine
from cruncher.db.ingest import ingest
from cruncher.messages import Instruction
from tests.test_backend import settings_for
from tests.test_mpi import mpiexec

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def reference(two_target_night, tmp_path_factory):
    """The night reprocessed on one machine, and the same instructions exported."""
    sim, _ = two_target_night
    root = tmp_path_factory.mktemp("reference") / "data"
    shutil.copytree(sim / "raw", root / "raw")
    _masters(sim, root)
    settings = settings_for(root, drp__workers=2)
    backend = Backend(settings).start()
    try:
        ingest(backend.engine, [root / "raw"], progress=False)
        events = backend.subscribe()
        common = ["--all", "--psfsub", "cadi", "--data-root", str(root)]
        export = root.parent / "campaign.jsonl"
        _run([BIN / "reprocess", *common, "--export", str(export)])
        sent = _run([BIN / "reprocess", *common, "--backend", backend.interface.url])
        expected = int(re.search(r"sent (\d+) instruction", sent).group(1))
        states = []
        deadline = time.monotonic() + 300
        while len(states) < expected and time.monotonic() < deadline:
            event = events.get(timeout=0.5)
            if event is not None and event.type == "finished":
                states.append((event.state, dict(event.summary).get("failures") or {}))
        assert states == [("done", {})] * expected
    finally:
        backend.stop()
    return sim, root, export


def test_three_mpi_ranks_make_what_reprocess_makes(reference, tmp_path):
    sim, root, export = reference
    out = tmp_path / "cluster"
    _masters(sim, out)
    done = subprocess.run([mpiexec(), "-n", "3", str(BIN / "super_cruncher"), str(export),
                           "--outdir", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "5 done, 0 failed" in done.stdout
    entries = _entries(export.with_suffix(".done.jsonl"))
    assert {e["state"] for e in entries} == {"done"} and len(entries) == 5
    assert len({e["rank"] for e in entries}) >= 2, "the work was spread over the ranks"
    _same_products(root, out)
    # back where the database is: the campaign's products recorded as reprocess recorded them
    said = _run([BIN / "cruncher", "db", "ingest-products", out, "--data-root", root])
    engine = make_engine(f"sqlite:///{root / 'cruncher.db'}")
    try:
        want, got = _recorded(engine, root), _recorded(engine, out)
    finally:
        engine.dispose()
    assert f"{len(want)} product(s) recorded" in said, said
    assert got == want
    assert all(inputs for _, inputs, _ in got.values()), "every product links to raw frames"


def _recorded(engine, root: Path) -> dict[str, tuple]:
    """Products recorded under ``root``: relative path -> (kind, raw inputs, contrast rows)."""
    out = {}
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, path, kind FROM reduced")).all()
        for rid, path, kind in rows:
            if not Path(path).is_relative_to(root):
                continue
            inputs = sorted(r["filename"] for r in queries.inputs_of_product(engine, path))
            curve = conn.execute(text("SELECT planet_type, separation_arcsec, contrast FROM "
                                      "contrast WHERE reduced_id = :r ORDER BY planet_type, "
                                      "separation_arcsec"), {"r": rid}).all()
            out[str(Path(path).relative_to(root))] = (kind, inputs, [tuple(c) for c in curve])
    return out


@pytest.fixture
def slurm() -> None:
    """A Slurm cluster that answers (``scripts/local-slurm.sh start``); CI requires one."""
    answers = shutil.which("sinfo") is not None and subprocess.run(
        ["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0
    if not answers:
        if os.environ.get("CRUNCHER_REQUIRE_SLURM"):
            pytest.fail("Slurm is required here (CRUNCHER_REQUIRE_SLURM) but sinfo gets no answer")
        pytest.skip("no Slurm cluster answers (scripts/local-slurm.sh start)")


def test_srun_in_two_phases_makes_what_reprocess_makes(reference, tmp_path, slurm):
    """As GPIES reprocessed: every raw frame to a cube first, then PSF subtraction on the cubes."""
    sim, root, export = reference
    out = tmp_path / "cluster"
    _masters(sim, out)
    for phase, tasks in (("cubes", 5), ("psfsub", 2)):
        done = subprocess.run(["srun", "-n", "3", "--mpi=pmi2", str(BIN / "super_cruncher"),
                               str(export), "--phase", phase, "--outdir", str(out),
                               "--done-log", str(tmp_path / f"{phase}.done.jsonl")],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert f"{tasks} done, 0 failed" in done.stdout and "3 backend(s)" in done.stdout
        if phase == "cubes":
            assert not any("cadi" in name for name in _products(out))
    _same_products(root, out)


def test_the_shipped_batch_script_runs_and_its_exit_status_says_if_anything_failed(tmp_path,
                                                                                  slurm):
    data, good, failing = _test_campaign(tmp_path)
    script = Path(__file__).parent.parent / "slurm" / "super_cruncher.sbatch"
    statuses = {}
    for name, lines in (("good", [good]), ("mixed", [good, failing])):
        campaign = tmp_path / f"{name}.jsonl"
        campaign.write_text("\n".join(i.to_json() for i in lines) + "\n")
        done = subprocess.run(
            ["sbatch", "--wait", "--ntasks-per-node=2", "--time=00:10:00",
             f"--output={tmp_path / name}.out", str(script), str(campaign), "all",
             "--data-root", str(data), "--done-log", str(tmp_path / f"{name}.done.jsonl")],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "SUPER_CRUNCHER_VENV": str(BIN.parent)})
        statuses[name] = done.returncode
        output = (tmp_path / f"{name}.out").read_text()
        assert "2 backend(s)" in output, output[-3000:] + done.stderr
    assert statuses == {"good": 0, "mixed": 1}
    assert "told to fail" in (tmp_path / "mixed.out").read_text()


def test_a_run_killed_midway_resumes_without_redoing_what_was_done(reference, tmp_path):
    sim, root, export = reference
    out, log = tmp_path / "cluster", tmp_path / "done.jsonl"
    _masters(sim, out)
    command = [str(BIN / "super_cruncher"), str(export), "--outdir", str(out), "--done-log",
               str(log)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while not any(e["label"].startswith("HD 95086") for e in _entries(log)):
        assert first.poll() is None and time.monotonic() < deadline, "no sequence finished"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)            # the wall-clock limit, say
    first.wait()
    finished = {e["id"] for e in _entries(log) if e["state"] == "done"}
    dataset = out / "reduced" / "HD_95086" / "autoreduced"
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*.fits")}
    again = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{len(finished)} skipped as done before" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*.fits")} == before
    entries = _entries(log)
    assert sorted(e["id"] for e in entries if e["state"] == "done") == \
        sorted({e["id"] for e in entries}), "each task done once"
    _same_products(root, out)


def test_bad_lines_unreadable_files_and_failing_sequences_are_reported(tmp_path):
    data, good, failing = _test_campaign(tmp_path)
    garbage = data / "raw" / "160315" / "S20160315S0099.fits"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"SIMPLE  =  garbage, cut short")
    unreadable = Instruction(files=(str(garbage),), outdir=_outdir(data, "unreadable"),
                             target="garbage")
    campaign = tmp_path / "campaign.jsonl"
    campaign.write_text("\n".join([good.to_json(), "{a line cut sho", failing.to_json(),
                                   unreadable.to_json()]) + "\n")
    done = subprocess.run([str(BIN / "super_cruncher"), str(campaign), "--data-root", str(data)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 done, 2 failed" in done.stdout
    assert "line 2" in done.stdout and "told to fail" in done.stdout
    assert "S20160315S0099" in done.stdout
    assert list(Path(good.outdir).glob("*.fits"))


# --- helpers ------------------------------------------------------------------------------------


def _test_campaign(tmp_path: Path) -> tuple[Path, Instruction, Instruction]:
    """A data root with three stand-in cubes; a sequence whose jobs succeed, one whose fail."""
    data = tmp_path / "data"
    cubes_dir = data / "cubes"
    cubes_dir.mkdir(parents=True)
    cubes = []
    for i in range(3):
        cubes.append(str(cubes_dir / f"S20160315S{i + 1:04d}_spdc.fits"))
        Path(cubes[-1]).write_bytes(b"the test job does not read it")
    good = Instruction(files=tuple(cubes), outdir=_outdir(data, "good"), level="cube",
                       psfsub=("cadi",), target="good", params={"test": {"action": "write"}})
    failing = Instruction(files=tuple(cubes), outdir=_outdir(data, "failing"), level="cube",
                          psfsub=("cadi",), target="failing",
                          params={"test": {"action": "fail", "reason": "told to fail"}})
    return data, good, failing


def _outdir(data: Path, name: str) -> str:
    return str(data / "reduced" / name / "autoreduced" / "20160315_H_Spec")


def _masters(sim: Path, root: Path) -> None:
    (root / "calibrations").mkdir(parents=True, exist_ok=True)
    for master in (sim / "calibrations").glob("S*E000*.fits"):
        shutil.copy(master, root / "calibrations")


def _run(command: list) -> str:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _entries(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]


def _products(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for sub in ("reduced", "calibrations")
            for p in (root / sub).rglob("*.fits")}


def _same_products(reference: Path, other: Path) -> None:
    want, got = _products(reference), _products(other)
    assert sorted(got) == sorted(want)
    assert any(name.endswith("_spdc.fits") for name in want) and \
        any("cadi" in name for name in want)
    for name, path in want.items():
        with fits.open(path) as a, fits.open(got[name]) as b:
            assert len(a) == len(b), name
            for ha, hb in zip(a, b):
                if ha.data is None:
                    assert hb.data is None, name
                    continue
                assert ha.data.shape == hb.data.shape, name
                columns = ha.data.names if ha.data.dtype.names else [None]
                for column in columns:
                    a_, b_ = (h.data if column is None else h.data[column] for h in (ha, hb))
                    if np.asarray(a_).dtype.kind in "fc":
                        assert np.allclose(a_, b_, rtol=1e-6, atol=0, equal_nan=True), name
                    else:
                        assert np.array_equal(a_, b_), (name, column)
