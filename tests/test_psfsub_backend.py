"""A dataset through the backend with the real algorithms: cADI, pyKLIP, fakes, contrast, detections.

The backend plans the jobs of one cube instruction, runs them as subprocesses on its worker
threads, and records what they made: ``reduced`` rows (with target, band, date and fiducial
contrasts), ``raw2reduced`` links, ``contrast`` curves and the detections of the general reduction.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from cruncher.backend.backend import Backend
from cruncher.db import schema
from cruncher.db.ingest import ingest
from tests.test_backend import finished, jobs, settings_for

pytestmark = pytest.mark.slow
PLANET = (0.4, 1e-4, 60.0)     # separation ("), contrast, PA (deg): bright enough for cADI too


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Ten small cubes of HR 4796A (8 channels, 101 px) with an L-type planet, in a data root."""
    from cruncher.instruments.gpi.sim.cubes import simulate_cubes
    from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan
    from cruncher.instruments.gpi.sim.scene import Planet

    root = tmp_path_factory.mktemp("psfsub-backend") / "data"
    planet = Planet(separation_arcsec=PLANET[0], contrast=PLANET[1], spectral_type="L",
                    pa_deg=PLANET[2])
    simulate_cubes(NightPlan(out=root / "reduced", seed=8, sequences=(SequencePlan(
        target="HR 4796A", frames=10, planets=(planet,)),)), channels=8, crop=101)
    cubes = sorted(str(p) for p in (root / "reduced" / "cubes").glob("*/*_spdc.fits"))
    return root, cubes


def test_one_dataset_gets_every_product_recorded(dataset):
    root, cubes = dataset
    backend = Backend(settings_for(root, drp__mode="external", backend__interface="queue",
                                   psfsub__klip_workers=2)).start()
    try:
        raws = [_raw_frame(Path(backend.settings.paths.raw), cube) for cube in cubes]
        assert len(ingest(backend.engine, [Path(backend.settings.paths.raw)]).added) == len(raws)
        outdir = root / "reduced" / "HR_4796A" / "autoreduced" / "20160314_H_Spec"
        events = backend.subscribe()
        reply = backend.interface.send({"files": cubes, "outdir": str(outdir), "level": "cube",
                                        "psfsub": ["cadi", "klip", "contrast"],
                                        "params": {"numthreads": 1}})
        assert reply["status"] == "accepted", reply
        state = finished(events, {reply["instruction_id"]}, timeout=900)
        assert state == {reply["instruction_id"]: "done"}
        psf = jobs(backend, "psf")
        assert len(psf) == 10 and {j["state"] for j in psf} == {"done"}, \
            [(j["id"], j["state"], j["error"]) for j in psf]
        with backend.engine.connect() as conn:
            reduced = [dict(r) for r in conn.execute(select(schema.reduced)).mappings()]
            links = conn.execute(select(schema.raw2reduced)).all()
            curve_rows = [dict(r) for r in conn.execute(select(schema.contrast)).mappings()]
            found = [dict(r) for r in conn.execute(
                select(schema.detections).order_by(schema.detections.c.rank)).mappings()]
    finally:
        backend.stop()

    kinds = {}
    for row in reduced:
        kinds.setdefault(row["kind"], []).append(row)
    for kind in ("cadi", "cadi_sdi", "klip_general", "klip_tdwarf", "klip_disk", "fakes_L_0",
                 "fakes_L_45", "fakes_T_0", "fakes_T_45", "contrast_L", "contrast_T"):
        assert kind in kinds, (kind, sorted(kinds))
    assert len(kinds["klip_general_speccube"]) == 5
    for row in reduced:
        assert row["object"] == "HR 4796A" and row["band"] == "H" and row["mode"] == "spec"
        assert str(row["date_obs"]).startswith("2016-03-1")
        assert row["software"].startswith("cruncher")
    assert {r["grade"] for r in kinds["fakes_L_0"]} == {"calibration"}
    # every product links to all ten raw frames behind its cubes
    assert len(links) == len(reduced) * len(raws)
    # the calibrated curves: one per planet type, fiducials on their reduced rows
    for planet_type in ("L", "T"):
        [row] = kinds[f"contrast_{planet_type}"]
        mine = [c for c in curve_rows if c["reduced_id"] == row["id"]]
        assert mine and all(c["planet_type"] == planet_type and c["calibrated"] for c in mine)
        assert 1e-7 < row["contrast_040"] < 1e-3, row
    # the planet is the best detection of the general reduction, where it was put
    [general] = kinds["klip_general"]
    mine = [d for d in found if d["reduced_id"] == general["id"]]
    assert mine and mine[0]["snr"] >= 5, mine[:3]
    assert abs(mine[0]["separation_arcsec"] - PLANET[0]) < 0.02
    assert abs(mine[0]["pa_deg"] - PLANET[2]) < 3
    assert json.loads(general["params"])["name"] == "klip_general"


def test_the_psfsub_command_runs_a_dataset_in_the_foreground(dataset, tmp_path):
    root, cubes = dataset
    outdir = tmp_path / "by-hand"
    env = {**os.environ, "CRUNCHER_PATHS_ROOT": str(tmp_path / "data")}
    run = subprocess.run([sys.executable, "-m", "cruncher", "psfsub", *cubes, "--outdir",
                          str(outdir), "--only", "cadi"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 of 2 jobs done" in run.stdout
    assert len(list(outdir.glob("*.fits"))) >= 2 and list(outdir.glob("*.png"))
    one = subprocess.run([sys.executable, "-m", "cruncher", "psfsub", cubes[0], "--outdir",
                          str(outdir)], capture_output=True, text=True, timeout=60, env=env)
    assert one.returncode == 2 and "at least 2 cubes" in one.stdout


def _raw_frame(raw_root, cube: str) -> str:
    """A stand-in raw frame behind a cube (its DATAFILE), so products can link to it."""
    from astropy.io import fits

    from cruncher.instruments.gpi.frames import FrameInfo, write_raw_frame

    header = fits.getheader(cube)
    name = str(header["DATAFILE"])
    number = int(name[10:14])
    raw_dir = raw_root / name[3:9]
    path = write_raw_frame(raw_dir, FrameInfo(number=number, object="HR 4796A", band="H",
                                              start=_start(header)),
                           data=np.zeros((16, 16), np.float32))
    assert path.name == name, (path.name, name)
    return name


def _start(header):
    import datetime as dt

    return dt.datetime.fromisoformat(f"{header['DATE-OBS']}T{header['UTSTART']}")
