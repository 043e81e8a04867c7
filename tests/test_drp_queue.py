"""DRP workers sharing one queue: every recipe runs once; a killed worker loses only its recipe."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cruncher.recipes import queue
from cruncher.recipes.templates import make_recipe
from cruncher.recipes.recipe import Primitive, Recipe

pytestmark = pytest.mark.slow


def start_worker(queue_dir: Path, cal: Path, logs: Path, name: str) -> subprocess.Popen:
    logs.mkdir(parents=True, exist_ok=True)
    # stderr to a file, not an unread pipe, which would block the worker once full
    with stderr_file(logs, name).open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "cruncher", "drp", "worker", "--name", name, "--queue",
             str(queue_dir), "--calibrations", str(cal), "--log-dir", str(logs), "--poll", "0.05",
             "--data-root", str(queue_dir.parent)],
            stdout=subprocess.DEVNULL, stderr=sink)


def stderr_file(logs: Path, name: str) -> Path:
    return logs / f"{name}.stderr"


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def states(queue_dir: Path) -> dict[str, str]:
    return dict(queue.state_of(p) for p in queue_dir.iterdir() if queue.state_of(p))


def log_text(logs: Path) -> str:
    return "\n".join(p.read_text() for p in logs.glob("gpi_drp_*.log"))


def cheap_recipe(frame: Path, out: Path) -> Recipe:
    """A real recipe that is quick: repair the bad pixels of one frame."""
    recipe = make_recipe("quickcube", [frame], out)
    return Recipe(name="badpix only", reduction_type="Testing", short_name="badpix",
                  input_dir=recipe.input_dir, output_dir=recipe.output_dir, files=recipe.files,
                  primitives=(Primitive(name="Interpolate bad pixels in 2D frame",
                                        params={"method": "vertical"}),))


@pytest.fixture
def frame(write_frame):
    data = np.random.default_rng(0).normal(100, 5, (2048, 2048)).astype(np.float32)
    return write_frame(1, data=data)


def test_two_workers_run_each_of_50_recipes_exactly_once(tmp_path, frame):
    qdir, cal, logs = tmp_path / "queue", tmp_path / "cal", tmp_path / "logs"
    qdir.mkdir()
    recipe = cheap_recipe(frame, tmp_path / "out")
    names = [f"r{i:03d}" for i in range(50)]
    for name in names:
        queue.queue_recipe(qdir, name, recipe)
    workers = {f"w{i}": start_worker(qdir, cal, logs, f"w{i}") for i in (1, 2)}
    try:
        wait_for(lambda: set(states(qdir).values()) == {queue.DONE}, 120, "all recipes done")
    finally:
        for w in workers.values():
            w.send_signal(signal.SIGTERM)
        for name, w in workers.items():
            assert w.wait(timeout=30) == 0, stderr_file(logs, name).read_text(errors="replace")
    text = log_text(logs)
    for name in names:
        assert len(re.findall(rf"\[{name}\] claimed by", text)) == 1, name
        assert len(re.findall(rf"\[{name}\] Reading recipe", text)) == 1, name
        assert len(re.findall(rf"\[{name}\] Recipe done", text)) == 1, name
    claimed_by = re.findall(r"claimed by (w\d)", text)
    assert len(claimed_by) == 50


def test_a_worker_killed_mid_recipe_leaves_it_working_and_the_other_carries_on(
        tmp_path, reduced_night):
    root, truth, _, science = reduced_night
    qdir, logs = tmp_path / "queue", tmp_path / "logs"
    qdir.mkdir()
    slow = make_recipe("spectral_science", science, tmp_path / "reduced")
    queue.queue_recipe(qdir, "a_slow", slow)
    cheap = cheap_recipe(science[0], tmp_path / "out")
    workers = [start_worker(qdir, root / "calibrations", logs, f"w{i}") for i in (1, 2)]
    try:
        wait_for(lambda: "[a_slow] claimed by" in log_text(logs), 60, "the slow recipe claimed")
        pid = int(re.search(r"\[a_slow\] claimed by w\d \(pid (\d+)\)", log_text(logs)).group(1))
        os.kill(pid, signal.SIGKILL)
        for i in range(8):
            queue.queue_recipe(qdir, f"b{i}", cheap)
        wait_for(lambda: all(s == queue.DONE for n, s in states(qdir).items() if n != "a_slow")
                 and len(states(qdir)) == 9, 120, "the cheap recipes done")
        assert states(qdir)["a_slow"] == queue.WORKING
        survivor = [w for w in workers if w.pid != pid]
        assert len(survivor) == 1 and survivor[0].poll() is None
        text = log_text(logs)
        assert "[a_slow] Recipe done" not in text
        cheap_pids = set(re.findall(r"\[b\d\] claimed by w\d \(pid (\d+)\)", text))
        assert cheap_pids == {str(survivor[0].pid)}
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                w.wait(timeout=60)
