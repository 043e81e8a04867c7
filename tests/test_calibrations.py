"""Choosing calibrations: AUTOMATIC rules, the file index, rebuilding it."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from cruncher.drp.calibrations import CalibrationIndex, MissingCalibrationError
from cruncher.instruments.gpi.sim.geometry import master_wavecal


def dark(directory, name, itime, mjd):
    header = fits.Header({"FILETYPE": "Dark File", "MJD-OBS": mjd})
    fits.HDUList([fits.PrimaryHDU(header=header),
                  fits.ImageHDU(np.zeros((4, 4), np.float32), header=fits.Header({"ITIME": itime}))]
                 ).writeto(directory / name)
    return directory / name


def test_dark_same_exposure_time_nearest_in_time(tmp_path):
    index = CalibrationIndex(tmp_path)
    dark(tmp_path, "a_dark.fits", 59.65, 100.0)
    near = dark(tmp_path, "b_dark.fits", 59.65, 100.9)
    dark(tmp_path, "c_dark.fits", 29.1, 101.0)
    index.rebuild()
    assert index.best("dark", mjd=101.0, itime=59.65) == near
    assert index.best("dark", mjd=101.0, itime=29.1).name == "c_dark.fits"
    with pytest.raises(MissingCalibrationError, match="ITIME=1.45"):
        index.best("dark", mjd=101.0, itime=1.45)


def test_wavecal_prefers_the_sequences_quick_wavecal(tmp_path):
    index = CalibrationIndex(tmp_path)
    master = master_wavecal("H", mjd=99.0)
    master.write(tmp_path / "master_H.fits")
    master_wavecal("J", mjd=100.0).write(tmp_path / "master_J.fits")
    quick = master.shifted(0.2, 0.3, kind="quick")
    import dataclasses
    dataclasses.replace(quick, mjd=100.5).write(tmp_path / "quick_H.fits")
    index.rebuild()
    assert index.best("wavecal", band="H", mjd=100.55).name == "quick_H.fits"
    assert index.best("wavecal", band="H", mjd=100.55, allow_quick=False).name == "master_H.fits"
    assert index.best("wavecal", band="H", mjd=103.0).name == "master_H.fits"  # quick too old
    assert index.best("wavecal", band="J", mjd=100.55).name == "master_J.fits"
    with pytest.raises(MissingCalibrationError):
        index.best("wavecal", band="K1", mjd=100.0)


def test_add_updates_the_index_and_a_damaged_index_is_rebuilt(tmp_path):
    index = CalibrationIndex(tmp_path)
    assert index.entries() == []
    path = dark(tmp_path, "x_dark.fits", 10.0, 5.0)
    index.add(path)
    assert [e.path for e in index.entries()] == ["x_dark.fits"]
    (tmp_path / "index.json").write_text("{not json")
    assert [e.path for e in index.entries()] == ["x_dark.fits"]
    assert not index.add_if_inside(tmp_path.parent / "elsewhere.fits")
    (tmp_path / "x_dark.fits").unlink()
    assert index.find("dark", mjd=5.0, itime=10.0) is None  # a vanished file is not offered
