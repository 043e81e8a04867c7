"""cADI on simulated cubes: the planet where the truth puts it, the products, the quicklook, refusals."""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from cruncher.errors import BadInputError
from cruncher.instruments.gpi.optics import LENSLET_SCALE
from cruncher.instruments.gpi.sim.cubes import simulate_cubes
from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan
from cruncher.instruments.gpi.sim.scene import Planet
from cruncher.psfsub import cadi, dataset, quicklook, snr
from cruncher.psfsub.job import JobFile, Result

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict:
    """Twelve cubes of beta Pic (about 9 deg of rotation) with an L-type planet at 0.4"."""
    out = tmp_path_factory.mktemp("cadi-sim")
    planet = Planet(separation_arcsec=0.4, contrast=1e-4, spectral_type="L", pa_deg=60)
    plan = NightPlan(out=out, seed=11, workers=2,
                     sequences=(SequencePlan(target="beta Pic", frames=12, planets=(planet,)),))
    simulate_cubes(plan)
    truth = json.loads((out / "truth.json").read_text())
    paths = sorted(str(p) for p in (out / "cubes").glob("*/*_spdc.fits"))
    return {"out": out, "paths": paths, "truth": truth}


@pytest.fixture(scope="module")
def data(sim) -> dataset.Dataset:
    return dataset.load(sim["paths"])


@pytest.fixture(scope="module")
def reduced(data) -> dict[str, tuple[np.ndarray, tuple[float, float]]]:
    return {"cadi": cadi.cadi(data), "cadi_sdi": cadi.cadi(data, sdi=True)}


@pytest.fixture(scope="module")
def quick_job(sim, tmp_path_factory) -> tuple[JobFile, Result]:
    """A quicklook ``cadi`` job read back from its job file, run once for the module."""
    tmp = tmp_path_factory.mktemp("cadi-job")
    JobFile(id="cadi:quick", algorithm="cadi", inputs=tuple(sim["paths"]),
            outdir=str(tmp / "reduced"), result=str(tmp / "result.json"),
            params={"quicklook": True}).write(tmp / "job.json")
    job = JobFile.read(tmp / "job.json")
    result = cadi.run_cadi(job)
    return job, result


def _planet_xy(truth: dict, centre: tuple[float, float]) -> tuple[float, float]:
    planet = truth["sequences"][0]["planets"][0]
    sep = planet["separation_arcsec"] / LENSLET_SCALE
    pa = np.radians(planet["pa_deg"])
    return centre[0] - sep * np.sin(pa), centre[1] + sep * np.cos(pa)


# --- the algorithm ---------------------------------------------------------------------------


def test_highpass_follows_its_cutoff_and_keeps_point_sources():
    n = 256
    y, x = np.indices((n, n))
    slow = 50.0 * np.cos(2 * np.pi * 1.0 * x / n)           # 1 cycle across: nearly all removed
    fast = 2.0 * np.cos(2 * np.pi * 16.0 * y / n)           # 16 cycles: kept
    out = cadi.highpass_fourier(slow + fast, cycles=4.0)
    expected = slow * (1 - np.exp(-(1.0 / 4.0) ** 2)) + fast * (1 - np.exp(-(16.0 / 4.0) ** 2))
    np.testing.assert_allclose(out, expected, atol=1e-9)
    point = np.zeros((n, n))
    point[94:107, 144:157] = snr.gaussian(3.5, half=6)
    point[:5] = np.nan
    kept = cadi.highpass_fourier(point)
    assert np.isnan(kept[:5]).all() and np.isfinite(kept[5:]).all()
    assert kept[100, 150] == pytest.approx(1.0, abs=0.03)


def test_cadi_finds_the_planet_where_the_truth_puts_it(data, sim, reduced):
    image, centre = reduced["cadi"]
    assert centre == (140.0, 140.0)
    assert cadi.units(data) == "contrast"
    snr_map = cadi.snr_image(image, centre, inner_px=10)
    found = snr.find_sources(snr_map, centre, threshold=5.0)
    x, y = _planet_xy(sim["truth"], centre)
    near = [s for s in found if np.hypot(s["x"] - x, s["y"] - y) <= 1.5]
    assert near, f"no source within 1.5 px of ({x:.1f}, {y:.1f}): {found}"
    assert near[0]["snr"] >= 5.0
    # In contrast units, the planet's matched-filter peak is a fraction of its 1e-4 contrast
    # (self-subtraction), but of that order, not ADU.
    peak = snr.matched_filter(image)[int(round(y)), int(round(x))]
    assert 1e-6 < peak < 2e-4


def test_sdi_reduction_runs_and_differs_from_plain_cadi(reduced):
    plain, _ = reduced["cadi"]
    sdi, centre = reduced["cadi_sdi"]
    assert sdi.shape == plain.shape
    # The field is a turning square of lenslets: about 40 % of the image.
    assert np.isfinite(sdi).sum() > 0.3 * sdi.size
    assert np.isfinite(sdi).sum() >= 0.95 * np.isfinite(plain).sum()
    assert np.isfinite(sdi[int(centre[1]), int(centre[0]) + 30])
    finite = np.isfinite(sdi) & np.isfinite(plain)
    assert not np.allclose(sdi[finite], plain[finite])


def test_cadi_refuses_one_cube_and_no_rotation(data):
    from dataclasses import replace

    single = replace(data, cubes=data.cubes[:1], centers=data.centers[:1],
                     parangs=data.parangs[:1], spot_flux=data.spot_flux[:1])
    with pytest.raises(BadInputError, match="at least 2"):
        cadi.cadi(single)
    still = replace(data, parangs=np.full_like(data.parangs, data.parangs[0]))
    with pytest.raises(BadInputError, match="no field rotation"):
        cadi.cadi(still)


# --- jobs and products -----------------------------------------------------------------------


def test_quicklook_job_lists_every_product(quick_job, data):
    job, result = quick_job
    kinds = [p.kind for p in result.products]
    assert sorted(kinds) == sorted(["cadi", "cadi_snr", "cadi_sdi", "cadi_sdi_snr",
                                    "quicklook_png"])
    assert {p.grade for p in result.products} == {"quicklook"}
    names = {Path(p.path).name for p in result.products}
    tag = data.tag
    assert names == {f"cadi-{tag}.fits", f"cadi-{tag}-snr.fits", f"cadi-sdi-{tag}.fits",
                     f"cadi-sdi-{tag}-snr.fits", f"quicklook-cadi-{tag}.png"}
    for product in result.products:
        assert Path(product.path).parent == Path(job.outdir)
        assert Path(product.path).is_file()
        assert product.extras["n_cubes"] == 12
        assert product.extras["field_rotation"] == pytest.approx(data.field_rotation, abs=1e-3)
    assert len(result.figures) == 3 and all(Path(f).is_file() for f in result.figures)
    assert {"load_s", "cadi_s", "cadi_sdi_s", "quicklook_png_s"} <= set(result.timings)
    # The result survives its JSON round trip (what the backend reads).
    back = Result.read(result.write(job.result))
    assert [p.kind for p in back.products] == kinds


def test_job_detections_include_the_planet(quick_job, sim):
    _, result = quick_job
    product = next(p for p in result.products if p.kind == "cadi")
    x, y = _planet_xy(sim["truth"], (140.0, 140.0))
    best = product.extras["detections"][0]
    assert np.hypot(best["x"] - x, best["y"] - y) <= 1.5
    assert best["snr"] >= 5.0
    assert best["pa_deg"] == pytest.approx(60.0, abs=3.0)
    assert best["sep_arcsec"] == pytest.approx(0.4, abs=0.02)


def test_products_carry_provenance_units_and_a_north_up_wcs(quick_job, sim, data):
    _, result = quick_job
    for product in result.products:
        if not product.path.endswith(".fits"):
            continue
        with fits.open(product.path) as hdul:
            primary, sci = hdul[0].header, hdul["SCI"].header
            image = hdul["SCI"].data
        algorithm = product.kind.removesuffix("_snr")
        assert primary["PSFALGO"] == algorithm
        assert primary["FILE_0"] == Path(sim["paths"][0]).name
        assert primary[f"FILE_{len(sim['paths']) - 1}"] == Path(sim["paths"][-1]).name
        assert primary["RAW_0"] == data.raw_names[0]
        assert primary["OBJECT"] == "beta Pic" and primary["CRUNCHJB"] == "cadi:quick"
        # Long HISTORY text is split over cards; joined back, the parameters are JSON again.
        history = "".join(str(h) for h in primary["HISTORY"])
        params, _ = json.JSONDecoder().raw_decode(history.split("parameters: ", 1)[1])
        assert params["highpass_cycles"] == 4.0 and params["sdi"] == (algorithm == "cadi_sdi")
        assert params["units"] == "contrast" and params["quicklook"] is True
        assert primary["PSFPARAM"].startswith("{\"algorithm\": ")
        assert "software: cruncher" in history and "software: numpy" in history
        assert sci["BUNIT"] == ("SNR" if product.kind.endswith("_snr") else "contrast")
        assert image.shape == (281, 281)
        wcs = WCS(sci)
        ra, dec = wcs.wcs_pix2world([[140.0, 140.0]], 0)[0]
        assert (ra, dec) == pytest.approx(sim["truth"]["sequences"][0]["coordinates"], abs=1e-6)
        # East is left: one pixel to the left is further east (larger RA).
        ra_left, _ = wcs.wcs_pix2world([[139.0, 140.0]], 0)[0]
        assert ra_left > ra


def test_quicklook_png_is_a_png_of_the_expected_size(quick_job):
    import matplotlib.image as mpimg

    _, result = quick_job
    png = next(p.path for p in result.products if p.kind == "quicklook_png")
    assert Path(png).read_bytes()[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(png)
    assert pixels.shape[:2] == (1300, 1400)
    assert pixels[..., :3].std() > 0.05                     # not a blank canvas
    two = next(f for f in result.figures if Path(f).name.startswith("cadi-S"))
    assert mpimg.imread(two).shape[:2] == (650, 1400)


def test_title_names_target_band_date_cubes_and_rotation():
    text = quicklook.title("HD 95086", "H", "20160315", 40, 21.34)
    assert text == "HD 95086  H  2016-03-15  40 cubes  rotation 21.3 deg"


def test_science_job_writes_only_its_own_reduction(sim, tmp_path):
    job = JobFile(id="cadi_sdi:1", algorithm="cadi_sdi", inputs=tuple(sim["paths"][:6]),
                  outdir=str(tmp_path / "reduced"), result=str(tmp_path / "result.json"))
    result = cadi.run_cadi_sdi(job)
    assert sorted(p.kind for p in result.products) == ["cadi_sdi", "cadi_sdi_snr"]
    assert {p.grade for p in result.products} == {"science"}
    assert [Path(f).name for f in result.figures] == [
        f"cadi-sdi-{dataset.load(sim['paths'][:2]).tag}.png"]
    assert sorted(Path(job.outdir).iterdir()) == sorted(
        [Path(p.path) for p in result.products] + [Path(result.figures[0])])


# --- refusals --------------------------------------------------------------------------------


def _job(tmp_path: Path, inputs: list[str]) -> JobFile:
    return JobFile(id="cadi:bad", algorithm="cadi", inputs=tuple(inputs),
                   outdir=str(tmp_path / "reduced"), result=str(tmp_path / "result.json"))


def test_one_cube_is_refused(sim, tmp_path):
    with pytest.raises(BadInputError, match="at least 2"):
        cadi.run_cadi(_job(tmp_path, sim["paths"][:1]))
    assert not (tmp_path / "reduced").exists()


def test_cubes_without_rotation_are_refused_but_still_get_a_quicklook(sim, tmp_path):
    copies = []
    for i in range(3):
        copies.append(str(tmp_path / f"S20160314S{900 + i:04d}_spdc.fits"))
        shutil.copy(sim["paths"][0], copies[-1])
    with pytest.raises(BadInputError, match="no field rotation.*ADI cannot separate planets"):
        cadi.run_cadi(_job(tmp_path, copies))
    quick = replace(_job(tmp_path, copies), params={"quicklook": True})
    result = cadi.run_cadi(quick)
    (png,) = [p for p in result.products if p.kind == "quicklook_png"]
    assert Path(png.path).stat().st_size > 0 and png.extras["field_rotation"] < 0.5


def test_a_truncated_cube_is_refused_and_named(sim, tmp_path):
    broken = tmp_path / Path(sim["paths"][1]).name
    raw = Path(sim["paths"][1]).read_bytes()
    broken.write_bytes(raw[: len(raw) // 2])
    # Cut short an hour ago: for good (a fresh short file may still be syncing, and is retried).
    an_hour_ago = time.time() - 3600
    os.utime(broken, (an_hour_ago, an_hour_ago))
    inputs = [sim["paths"][0], str(broken), *sim["paths"][2:4]]
    with pytest.raises(BadInputError) as caught:
        cadi.run_cadi(_job(tmp_path, inputs))
    assert caught.value.path == str(broken)
    assert "truncated" in caught.value.reason
