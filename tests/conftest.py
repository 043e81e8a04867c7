"""Shared fixtures: databases (SQLite and a real MariaDB), small raw GPI frames, settings."""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from cruncher.db import engine as dbengine
from cruncher.instruments.gpi.frames import FrameInfo, write_raw_frame
from cruncher.testing import mariadb

SMALL = (16, 16)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path) -> None:
    """No test reads the developer's own configuration or environment."""
    for var in list(os.environ):
        if var.startswith("CRUNCHER_") and not var.startswith(("CRUNCHER_TEST_", "CRUNCHER_REQUIRE_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[str]:
    """A MariaDB server URL (the machine's or a throwaway one); skip only where none can exist."""
    try:
        with mariadb.server_url() as url:
            yield url
    except RuntimeError as exc:
        if os.environ.get("CRUNCHER_REQUIRE_MARIADB"):
            pytest.fail(f"MariaDB is required here (CRUNCHER_REQUIRE_MARIADB) but: {exc}")
        pytest.skip(f"no MariaDB server and none could be started: {exc}")


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def db_url(request, tmp_path) -> Iterator[str]:
    """A fresh, empty database URL: SQLite in a temporary directory, or a scratch MariaDB database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cruncher.db'}"
        return
    server = request.getfixturevalue("mariadb_server")
    with mariadb.scratch_database(server) as url:
        yield url


@pytest.fixture
def engine(db_url):
    """An engine on a fresh database with the schema created."""
    eng = dbengine.make_engine(db_url)
    dbengine.init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def journal(tmp_path):
    """A backend journal on a fresh SQLite database."""
    from cruncher.backend.journal import Journal

    eng = dbengine.make_engine(f"sqlite:///{tmp_path / 'journal.db'}")
    dbengine.init_db(eng)
    journal = Journal(eng)
    yield journal
    journal.close()
    eng.dispose()


@pytest.fixture
def write_frame(tmp_path) -> Callable[..., Path]:
    """Write a small raw GPI frame: ``write_frame(number, directory=..., **FrameInfo fields)``."""
    def write(number: int = 1, directory: Path | None = None, data=None, **fields) -> Path:
        directory = directory or tmp_path / "raw" / "131118"
        start = fields.pop("start", dt.datetime(2013, 11, 18, 4, 0) + dt.timedelta(minutes=number))
        info = FrameInfo(number=number, start=start, **fields)
        return write_raw_frame(directory, info, data=np.zeros(SMALL, np.float32)
                               if data is None else data)
    return write


@pytest.fixture
def night(write_frame, tmp_path) -> Path:
    """A small night: 2 darks, an arc, 6 frames of HD 95086 (H), 3 of HR 2562 (J); its directory."""
    plan = [dict(object="Dark", obstype="DARK", obsclass="dayCal")] * 2
    plan += [dict(object="HD 95086", obstype="ARC", gcallamp="Ar")]
    plan += [dict(object="HD 95086", band="H")] * 6 + [dict(object="HR 2562", band="J")] * 3
    for number, fields in enumerate(plan, start=1):
        write_frame(number, **fields)
    return tmp_path / "raw"


# --- simulated GPI data (issue B): made once per test session ------------------------------------

SIM_FRAMES = 3


@pytest.fixture(scope="session")
def sim_night(tmp_path_factory):
    """A small simulated night (darks, an arc, 3 science frames with a planet), noise on."""
    from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan, simulate_night
    from cruncher.instruments.gpi.sim.scene import Planet

    out = tmp_path_factory.mktemp("night")
    plan = NightPlan(out=out, sequences=(SequencePlan(
        frames=SIM_FRAMES, planets=(Planet(separation_arcsec=0.4, contrast=1e-4),)),),
        seed=11, darks=4, arc_darks=2, truth_cubes=True)
    truth = simulate_night(plan)
    return out, truth


@pytest.fixture(scope="session")
def two_target_night(tmp_path_factory):
    """Darks at two exposure times, an arc, 3 frames of HD 95086, then 3 of HR 2562 (H band)."""
    from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan, simulate_night

    out = tmp_path_factory.mktemp("two-target-night")
    truth = simulate_night(NightPlan(out=out, seed=5, darks=2, arc_darks=2, sequences=(
        SequencePlan(target="HD 95086", frames=3),
        SequencePlan(target="HR 2562", frames=3, arc=False))))
    return out, truth


@pytest.fixture(scope="session")
def reduced_night(sim_night):
    """``sim_night`` reduced by the built-in DRP: master darks, quick wavecal, science cubes."""
    from cruncher.drp.calibrations import CalibrationIndex
    from cruncher.drp.drplog import DrpLog
    from cruncher.drp.runner import run_recipe
    from cruncher.recipes.templates import make_recipe

    root, truth = sim_night
    raw = sorted((root / "raw").glob("*/*.fits"))
    kinds = {p: truth["frames"][p.name] for p in raw}
    index, log = CalibrationIndex(root / "calibrations"), DrpLog(root / "logs")
    outcomes = {}
    for itime in sorted({round(f["itime"], 2) for f in kinds.values() if f["kind"] == "dark"}):
        darks = [p for p, f in kinds.items() if f["kind"] == "dark" and round(f["itime"], 2) == itime]
        outcomes[f"dark{itime}"] = run_recipe(make_recipe("dark", darks, root / "calibrations"),
                                              name=f"dark{itime}", calibrations=index, log=log)
    arcs = [p for p, f in kinds.items() if f["kind"] == "arc"]
    outcomes["arc"] = run_recipe(make_recipe("quick_wavecal", arcs, root / "calibrations"),
                                 name="arc", calibrations=index, log=log)
    science = [p for p, f in kinds.items() if f["kind"] == "science"]
    outcomes["science"] = run_recipe(make_recipe("spectral_science", science, root / "reduced"),
                                     name="science", calibrations=index, log=log)
    assert all(o.ok for o in outcomes.values()), {k: o.reason for k, o in outcomes.items()}
    return root, truth, outcomes, science
