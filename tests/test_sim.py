"""The simulator's own promises: geometry, sky conventions, the night's files and truth."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from cruncher.instruments.gpi import optics
from cruncher.instruments.gpi.sim.geometry import IfsModel, master_wavecal
from cruncher.instruments.gpi.sim.scene import Planet


def test_the_lenslet_array_fills_a_rotated_square_and_traces_do_not_overlap():
    model = IfsModel()
    wavecal = master_wavecal("H", model)
    assert 34_000 < wavecal.valid.sum() < 37_000
    iy, ix = wavecal.lenslets()
    x0, y0 = wavecal.x0[iy, ix], wavecal.y0[iy, ix]
    order = np.argsort(x0)
    x0, y0 = x0[order], y0[order]
    # traces closer than 6 sigma across must be further apart along the dispersion than the
    # extracted stretch (the band, a margin row each side) plus the line spread (2 sigma each side)
    light = model.trace_length_px + 2 + 4 * model.lsf_sigma_y
    for i in range(0, len(x0), 37):
        near = np.abs(x0 - x0[i]) < 6 * model.psf_sigma_x
        near[i] = False
        assert np.all(np.abs(y0[near] - y0[i]) > light)


def test_plans_that_share_a_seed_do_not_share_their_planets(tmp_path):
    from cruncher.instruments.gpi.sim import night
    from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan

    def scene(pa: float):
        plan = NightPlan(out=tmp_path, seed=11, sequences=(SequencePlan(
            target="beta Pic", planets=(Planet(separation_arcsec=0.4, contrast=1e-4, pa_deg=pa),)),))
        return night._scene(plan, 0)

    assert scene(45.0).planets[0].pa_deg == 45.0
    assert scene(60.0).planets[0].pa_deg == 60.0


def test_planet_parse():
    p = Planet.parse("0.4,1e-5,T")
    assert (p.separation_arcsec, p.contrast, p.spectral_type) == (0.4, 1e-5, "T")
    assert Planet.parse("0.25,2e-4").spectral_type == "L"
    assert Planet.parse("0.3,1e-4,L,120").pa_deg == 120
    with pytest.raises(ValueError):
        Planet.parse("0.4,1e-5,Q")
    with pytest.raises(ValueError):
        Planet.parse("0.4")


def test_sky_to_cube_matches_pyklips_derotation():
    """A source placed with sky_to_cube_offset lands at its sky PA after pyKLIP's derotation."""
    from pyklip.klip import rotate

    image = np.zeros((101, 101))
    angle = 37.0
    dx, dy = optics.sky_to_cube_offset(30.0, 120.0, angle)
    image[int(round(50 + dy)), int(round(50 + dx))] = 1.0
    derotated = rotate(image, angle, [50, 50], flipx=True)
    y, x = np.unravel_index(np.nanargmax(derotated), derotated.shape)
    pa = np.degrees(np.arctan2(-(x - 50), y - 50)) % 360   # east (left) of north (up)
    assert abs(pa - 120.0) < 3.0


def test_night_files_headers_and_truth(sim_night):
    root, truth = sim_night
    names = sorted(p.name for p in (root / "raw").glob("*/*.fits"))
    assert names == sorted(truth["frames"]) and names[0].startswith("S2016")
    kinds = [truth["frames"][n]["kind"] for n in names]
    assert kinds == ["dark"] * 6 + ["arc"] + ["science"] * 3
    mjds = [truth["frames"][n]["mjd"] for n in names]
    assert mjds == sorted(mjds)
    header = fits.getheader(root / "raw" / "160315" / names[-1])
    for key in ("OBJECT", "OBSTYPE", "IFSFILT", "DISPERSR", "OCCULTER", "APODIZER", "UTSTART",
                "HA", "TAMBIENT", "PRESSUR2", "RA", "DEC", "PAR_ANG", "MJD-OBS", "DATALAB"):
        assert key in header
    assert header["HA"][0] in "+-" and header["OCCULTER"] == "FPM_H_G6225"
    sci = fits.getheader(root / "raw" / "160315" / names[-1], "SCI")
    assert sci["ITIME0"] == round(sci["ITIME"] * 1e6) and fits.getdata(
        root / "raw" / "160315" / names[-1], "DQ").sum() > 1000
    rotation = [truth["frames"][n]["avparang"] for n in names if truth["frames"][n]["kind"] == "science"]
    assert np.all(np.diff(rotation) != 0)
    assert {p.name.split("_")[-1] for p in (root / "calibrations").glob("S*.fits")} >= {
        "wavecal.fits", "badpix.fits"}
