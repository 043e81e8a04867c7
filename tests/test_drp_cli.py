"""``cruncher simulate`` and ``cruncher drp`` as a user runs them."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from astropy.io import fits

from cruncher.cli import main
from cruncher.recipes import queue
from cruncher.recipes.templates import make_recipe


def test_simulate_cubes_writes_pyklip_ready_cubes_with_truth(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", "cubes", "--out", str(out), "--frames", "2", "--planet", "0.3,1e-4,T",
                 "--workers", "1", "--data-root", str(tmp_path)]) == 0
    assert "simulated 2 cubes" in capsys.readouterr().out
    cubes = sorted((out / "cubes").glob("*/*_spdc.fits"))
    truth = json.loads((out / "truth.json").read_text())
    assert len(cubes) == 2 and sorted(truth["frames"]) == [c.name for c in cubes]
    header = fits.getheader(cubes[0], "SCI")
    x, y = truth["frames"][cubes[0].name]["star_centre"]
    assert abs(header["PSFCENTX"] - x) < 0.1 and abs(header["PSFCENTY"] - y) < 0.1
    planet = truth["frames"][cubes[0].name]["planets"][0]
    assert planet["spectral_type"] == "T" and planet["separation_arcsec"] == 0.3


def test_simulate_rejects_a_malformed_planet(tmp_path):
    with pytest.raises(SystemExit, match="type must be L or T"):
        main(["simulate", "night", "--out", str(tmp_path), "--planet", "0.4,1e-5,X"])


def test_drp_run_and_calibrations(reduced_night, tmp_path, capsys):
    root, truth, _, science = reduced_night
    cal = tmp_path / "cal"
    shutil.copytree(root / "calibrations", cal)
    recipe = make_recipe("quickcube", science[:1], tmp_path / "out")
    qdir = tmp_path / "queue"
    qdir.mkdir()
    path = queue.queue_recipe(qdir, "quick1", recipe)
    common = ["--calibrations", str(cal), "--log-dir", str(tmp_path / "logs"),
              "--data-root", str(tmp_path)]
    assert main(["drp", "run", str(path), *common]) == 0
    out = capsys.readouterr().out
    assert f"File output to: {tmp_path / 'out' / (science[0].stem + '_spdc.fits')}" in out
    assert queue.find(qdir, "quick1")[1] == queue.DONE
    assert main(["drp", "calibrations", "--rebuild", *common]) == 0
    listing = capsys.readouterr().out
    assert "dark" in listing and "quick" in listing and "badpix" in listing
    broken = tmp_path / "broken.xml"
    broken.write_text("<recipe")
    assert main(["drp", "run", str(broken), *common]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_array_module_switch(monkeypatch):
    from cruncher import xp

    assert xp.array_module("numpy") is np
    assert xp.array_module("auto") is np or xp.name(xp.array_module("auto")) == "cupy"
    monkeypatch.setattr(xp, "_cupy", lambda: None)
    with pytest.raises(RuntimeError, match="cupy is not installed"):
        xp.array_module("cupy")
    with pytest.raises(ValueError):
        xp.array_module("torch")
    assert xp.to_numpy(np.arange(3)).tolist() == [0, 1, 2]
