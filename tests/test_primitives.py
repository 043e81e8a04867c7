"""Primitives on their own: the behaviours the end-to-end tests do not reach."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from cruncher.drp.calibrations import CalibrationIndex
from cruncher.drp.context import ReductionContext
from cruncher.drp.drplog import DrpLog
from cruncher.drp.primitive import PrimitiveError, load_primitives, lookup
from cruncher.drp.primitives.badpix_2d import NEIGHBOURS, repair
from cruncher.drp.primitives.correct_distortion import terms
from cruncher.instruments.gpi.sim.geometry import master_wavecal
from cruncher.recipes.templates import load_template


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "cal").mkdir()
    return ReductionContext(recipe=load_template("spdc"), recipe_name="t",
                            calibrations=CalibrationIndex(tmp_path / "cal"),
                            log=DrpLog(tmp_path / "logs"))


def test_every_template_primitive_is_implemented_and_named_as_in_gpi():
    registry = load_primitives()
    for template in ("spectral_science", "quickcube", "dark", "quick_wavecal"):
        for primitive in load_template(template).primitives:
            assert lookup(primitive.name).name == primitive.name
    assert len(registry) == 14


def test_bad_pixel_methods():
    data = np.arange(25, dtype=float).reshape(5, 5)
    bad = np.zeros_like(data, bool)
    bad[2, 2] = True
    assert repair(data, bad, NEIGHBOURS["vertical"])[2, 2] == (7 + 17) / 2
    assert repair(data, bad, NEIGHBOURS["n4n"])[2, 2] == (7 + 17 + 11 + 13) / 4
    assert repair(data, bad, NEIGHBOURS["all8"])[2, 2] == pytest.approx(12.0)
    bad[1:4, 2] = True
    fixed = repair(data, bad, NEIGHBOURS["vertical"])
    assert np.isnan(fixed[2, 2]) and fixed[1, 2] == 2.0  # a column of bad pixels stays for later


def test_distortion_solution_is_applied_when_one_exists(ctx, tmp_path, write_frame):
    from cruncher.drp.context import load_raw_frame

    frame = write_frame(1, data=np.zeros((2048, 2048), np.float32))
    ctx.frame = load_raw_frame(frame)
    ctx.cube = np.zeros((2, 281, 281), np.float32)
    ctx.cube[:, 100, 100] = 1.0
    step = lookup("Correct Distortion")({"Save": "1"})
    step(ctx)
    assert ctx.ext_updates["DRPDIST"][0] == "none" and ctx.cube[0, 100, 100] == 1.0
    assert ctx.cube_product.name == "S20131118S0001_spdc.fits"
    order = 2
    coeffs = np.zeros((2, len(terms(np.zeros(1), np.zeros(1), order))))
    coeffs[0, 0] = 2.0   # the corrected pixel (x, y) is found at (x + 2, y) in the raw cube
    header = fits.Header({"FILETYPE": "Distortion Measurement", "MJD-OBS": 56614.0})
    fits.HDUList([fits.PrimaryHDU(header=header),
                  fits.ImageHDU(coeffs, header=fits.Header({"ORDER": order}))]).writeto(
        tmp_path / "cal" / "distortion.fits")
    ctx.calibrations.rebuild()
    step(ctx)
    assert ctx.ext_updates["DRPDIST"][0] == "distortion.fits"
    assert ctx.cube[0, 100, 98] == pytest.approx(1.0)


def test_flexure_methods(ctx, write_frame):
    from cruncher.drp.context import load_raw_frame

    ctx.frame = load_raw_frame(write_frame(2, data=np.zeros((2048, 2048), np.float32)))
    ctx.wavecal = master_wavecal("H")
    lookup("Update Spot Shifts for Flexure")({"method": "Manual", "manual_dx": "0.5",
                                              "manual_dy": "-0.25"})(ctx)
    assert ctx.wavecal.shift == (0.5, -0.25) and ctx.ext_updates["FLEXDY"][0] == -0.25
    lookup("Update Spot Shifts for Flexure")({"method": "Lookup"})(ctx)
    assert ctx.wavecal.shift == (0.5, -0.25)  # no arc in the index: nothing more applied
    with pytest.raises(PrimitiveError, match="unknown method"):
        lookup("Update Spot Shifts for Flexure")({"method": "guess"})(ctx)


def test_dark_combination_refuses_mixed_exposure_times(ctx, write_frame, tmp_path):
    a = write_frame(1, data=np.zeros((2048, 2048), np.float32), itime=10.0, obstype="DARK")
    b = write_frame(2, data=np.zeros((2048, 2048), np.float32), itime=20.0, obstype="DARK")
    ctx.inputs = [a, b]
    with pytest.raises(PrimitiveError, match="different exposure times"):
        lookup("Combine 2D dark images")({})(ctx)
    with pytest.raises(PrimitiveError, match="unknown Method"):
        lookup("Combine 2D dark images")({"Method": "mode"})(ctx)


@pytest.mark.parametrize("method", ["median", "mean", "sigmaclip"])
def test_dark_combination_methods(ctx, write_frame, tmp_path, method):
    rng = np.random.default_rng(1)
    frames = [write_frame(i, data=(50 + rng.normal(0, 1, (2048, 2048))).astype(np.float32),
                          itime=10.0, obstype="DARK") for i in range(1, 4)]
    ctx.recipe = type(ctx.recipe)(name="d", reduction_type="Calibration", short_name="dark",
                                  input_dir=str(frames[0].parent),
                                  output_dir=str(ctx.calibrations.directory),
                                  files=tuple(f.name for f in frames))
    ctx.inputs = frames
    lookup("Combine 2D dark images")({"Method": method})(ctx)
    out = ctx.written[0]
    assert abs(np.mean(fits.getdata(out, 1)) - 50) < 0.05
    assert ctx.calibrations.best("dark", mjd=56614.0, itime=10.0) == out
