"""Bad input fails its recipe with a clear reason; the worker lives on."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from astropy.io import fits

from cruncher.drp.worker import QueueWorker, WorkerConfig
from cruncher.recipes import queue
from cruncher.recipes.templates import make_recipe


@pytest.fixture
def worker(tmp_path):
    config = WorkerConfig(queue_dir=tmp_path / "queue", calibrations=tmp_path / "cal",
                          log_dir=tmp_path / "logs", poll_s=0.01, array="numpy")
    config.queue_dir.mkdir()
    config.calibrations.mkdir()
    return QueueWorker(config, name="test")


def full_frame(write_frame, number, **fields):
    data = np.random.default_rng(number).normal(100, 5, (2048, 2048)).astype(np.float32)
    return write_frame(number, data=data, **fields)


def old(path):
    past = time.time() - 3600
    os.utime(path, (past, past))
    return path


def run(worker, name, recipe_or_text):
    queue.queue_recipe(worker.config.queue_dir, name, recipe_or_text)
    assert worker.run_next()
    assert queue.find(worker.config.queue_dir, name)[1] == queue.FAILED
    log = "".join(p.read_text() for p in worker.config.log_dir.glob("*.log"))
    line = [ln for ln in log.splitlines() if f"[{name}] Recipe FAILED" in ln]
    assert len(line) == 1
    return line[0]


def cube_recipe(files, out):
    return make_recipe("spectral_science", files, out)


def test_truncated_fits(worker, write_frame, tmp_path):
    path = full_frame(write_frame, 1)
    path.write_bytes(path.read_bytes()[:-100_000])
    assert "truncated" in run(worker, "trunc", cube_recipe([old(path)], tmp_path / "out"))


def test_a_frame_still_being_written_says_so(worker, write_frame, tmp_path):
    path = full_frame(write_frame, 1)
    path.write_bytes(path.read_bytes()[:-100_000])
    assert "still being written" in run(worker, "young", cube_recipe([path], tmp_path / "out"))


def test_missing_keywords(worker, write_frame, tmp_path):
    path = full_frame(write_frame, 2)
    with fits.open(path, mode="update") as hdul:
        del hdul[0].header["IFSFILT"]
    assert "missing keyword IFSFILT" in run(worker, "kw", cube_recipe([path], tmp_path / "out"))


def test_wrong_shape(worker, write_frame, tmp_path):
    path = write_frame(3, data=np.zeros((100, 100), np.float32))
    assert "wrong shape (100, 100)" in run(worker, "shape", cube_recipe([path], tmp_path / "out"))


def test_nan_filled_frame(worker, write_frame, tmp_path):
    path = write_frame(4, data=np.full((2048, 2048), np.nan, np.float32))
    assert "NaN-filled" in run(worker, "nan", cube_recipe([path], tmp_path / "out"))


def test_recipe_that_does_not_parse(worker):
    reason = run(worker, "broken", "<recipe Name='x'><dataset InputDir='/a'")
    assert "XML" in reason or "well-formed" in reason


def test_file_outside_input_dir(worker, write_frame, tmp_path):
    inside = full_frame(write_frame, 5)
    (tmp_path / "elsewhere").mkdir()
    outside = tmp_path / "elsewhere" / "S20131118S0099.fits"
    outside.write_bytes(inside.read_bytes())
    text = cube_recipe([inside], tmp_path / "out").to_xml().replace(
        f'FileName="{inside.name}"', 'FileName="../../elsewhere/S20131118S0099.fits"')
    assert "outside" in run(worker, "escape", text)


def test_unknown_primitive_and_missing_calibration(worker, write_frame, tmp_path):
    path = full_frame(write_frame, 6)
    text = cube_recipe([path], tmp_path / "out").to_xml().replace(
        "Assemble Spectral Datacube", "Assemble Spectral Soup")
    assert "unknown primitive 'Assemble Spectral Soup'" in run(worker, "soup", text)
    assert "no wavecal calibration with band=H" in run(worker, "nocal",
                                                      cube_recipe([path], tmp_path / "out"))


def test_the_worker_lives_on_after_failures(worker, write_frame, tmp_path):
    bad = write_frame(7, data=np.zeros((10, 10), np.float32))
    run(worker, "a_bad", cube_recipe([bad], tmp_path / "out"))
    good = full_frame(write_frame, 8)
    recipe = make_recipe("spectral_science", [good], tmp_path / "out",
                         overrides={})
    from cruncher.recipes.recipe import Primitive, Recipe

    quick = Recipe(name="t", reduction_type="Testing", short_name="t", input_dir=recipe.input_dir,
                   output_dir=recipe.output_dir, files=recipe.files,
                   primitives=(Primitive(name="Interpolate bad pixels in 2D frame"),))
    queue.queue_recipe(worker.config.queue_dir, "b_good", quick)
    assert worker.run_next()
    assert queue.find(worker.config.queue_dir, "b_good")[1] == queue.DONE
