"""The built-in DRP against the simulator's truth (issue B acceptance), on a real-size night."""
from __future__ import annotations


import numpy as np
import pytest
from astropy.io import fits

from cruncher.instruments.gpi import optics

pytestmark = pytest.mark.slow


def cube_of(root, raw_path):
    return root / "reduced" / f"{raw_path.stem}_spdc.fits"


def test_every_science_frame_becomes_a_cube_with_no_holes_in_the_field(reduced_night):
    root, truth, outcomes, science = reduced_night
    assert sorted(p.name for p in outcomes["science"].products if p.name.endswith("_spdc.fits")) \
        == sorted(f"{p.stem}_spdc.fits" for p in science)
    for raw in science:
        with fits.open(cube_of(root, raw)) as hdul:
            cube, dq = hdul["SCI"].data, hdul["DQ"].data
            assert cube.shape == (37, 281, 281)
            fov = np.isfinite(fits.getdata(root / "truth" / f"{raw.stem}_truth.fits")[0])
            assert fov.sum() > 30_000
            assert np.all(np.isfinite(cube[:, fov])), "NaN or inf inside the field of view"
            assert np.all(dq[:, ~fov] & 1)
            assert (dq[:, fov] & 32).sum() > 0, "bad pixels were repaired and flagged"


def test_spectra_match_the_truth_within_2_percent(reduced_night):
    root, truth, _, science = reduced_night
    errors = []
    for raw in science:
        measured = fits.getdata(cube_of(root, raw), "SCI").astype(np.float64)
        expected = fits.getdata(root / "truth" / f"{raw.stem}_truth.fits").astype(np.float64)
        gain, read = truth["gain"], truth["read_noise_e"]
        # noise per channel of the extracted spectrum: photons plus the read noise of ~1.5 pixels
        noise = np.sqrt(np.clip(expected, 0, None) * gain + 1.5 * read ** 2) / gain
        with np.errstate(all="ignore"):
            snr = np.nan_to_num(np.median(expected / noise, axis=0))
        good = snr > 50
        assert good.sum() > 50, "too few bright lenslets for the comparison"
        errors.append(np.abs(measured[:, good] - expected[:, good]) / expected[:, good])
    median = float(np.median(np.concatenate([e.ravel() for e in errors])))
    assert median < 0.02, f"median relative error {median:.4f}"


def test_star_centre_from_spots_in_every_slice(reduced_night):
    root, truth, _, science = reduced_night
    for raw in science:
        header = fits.getheader(cube_of(root, raw), "SCI")
        true_x, true_y = truth["frames"][raw.name]["star_centre"]
        for c in range(37):
            x, y = map(float, header[f"PSFC_{c}"].split())
            assert np.hypot(x - true_x, y - true_y) < 0.1, (raw.name, c, x, y, true_x, true_y)
            spots = np.array([list(map(float, header[f"SATS{c}_{k}"].split())) for k in range(4)])
            assert np.hypot(*(spots.mean(axis=0) - (true_x, true_y))) < 0.1
        assert header["SATSMASK"] == "1FFFFFFFFF"


def test_flexure_from_the_arc(reduced_night):
    root, truth, outcomes, science = reduced_night
    quick = [p for p in outcomes["arc"].products if p.name.endswith("_wavecal.fits")][0]
    header = fits.getheader(quick, "SCI")
    dx, dy = truth["flexure"]
    assert abs(header["FLEXDX"] - dx) < 0.1 and abs(header["FLEXDY"] - dy) < 0.1
    cube_header = fits.getheader(cube_of(root, science[0]), "SCI")
    assert cube_header["FLEXDX"] == pytest.approx(header["FLEXDX"], abs=1e-3)
    assert cube_header["FLEXDY"] == pytest.approx(header["FLEXDY"], abs=1e-3)


def test_avparang(reduced_night):
    root, truth, _, science = reduced_night
    for raw in science:
        measured = fits.getheader(cube_of(root, raw), "SCI")["AVPARANG"]
        expected = truth["frames"][raw.name]["avparang"]
        assert abs((measured - expected + 180) % 360 - 180) < 0.05


def test_dark_subtraction_residual_below_read_noise(reduced_night):
    """An independent dark frame minus the master dark: no pattern left above the read noise."""
    from cruncher.drp.calibrations import CalibrationIndex
    from cruncher.drp.context import load_raw_frame

    root, truth, _, _ = reduced_night
    frames = sorted((root / "raw").glob("*/*.fits"))
    darks = [p for p in frames if truth["frames"][p.name]["kind"] == "dark"]
    last = load_raw_frame(darks[0])
    master = CalibrationIndex(root / "calibrations").best("dark", mjd=last.mjd, itime=last.itime)
    bad = fits.getdata(next((root / "calibrations").glob("*badpix.fits")), 1).astype(bool)
    residual = (last.data - fits.getdata(master, 1)) * truth["gain"]     # electrons
    residual[bad] = np.nan
    before = last.data * truth["gain"]
    before[bad] = np.nan
    read = truth["read_noise_e"]
    def block_medians(image):
        return np.nanmedian(image.reshape(32, 64, 32, 64), axis=(1, 3))

    # the dark's glow and hot pixels stood well above the read noise, and are gone afterwards
    assert np.nanmax(np.abs(block_medians(before))) > 2 * read
    assert np.nanmax(np.abs(block_medians(residual))) < read
    hot = np.abs(before) > 10 * read
    assert hot.sum() > 1000 and np.nanstd(residual[hot]) < 0.5 * np.nanstd(before[hot])
    # what is left is noise: one frame's, plus the master's smaller share
    assert np.nanstd(residual[~hot]) < 1.5 * read


def test_pyklip_reads_our_cubes(reduced_night):
    from pyklip.instruments.GPI import GPIData

    root, truth, _, science = reduced_night
    paths = [str(cube_of(root, raw)) for raw in science]
    dataset = GPIData(paths, quiet=True)
    assert dataset.input.shape == (37 * len(paths), 281, 281)
    expected_wvs = optics.channel_centres("H")
    assert np.allclose(dataset.wvs[:37], expected_wvs, atol=0.005)
    for i, raw in enumerate(science):
        frame = truth["frames"][raw.name]
        centres = dataset.centers[i * 37:(i + 1) * 37]
        assert np.all(np.hypot(*(centres - frame["star_centre"]).T) < 0.1)
        expected_pa = optics.pyklip_angle(frame["avparang"])
        assert np.allclose(dataset.PAs[i * 37:(i + 1) * 37], expected_pa, atol=0.05)


def test_products_carry_provenance(reduced_night):
    root, _, _, science = reduced_night
    header = fits.getheader(cube_of(root, science[0]))
    comments = "\n".join(str(c) for c in header["COMMENT"])
    assert "Assemble Spectral Datacube" in comments and "<recipe" in comments
    assert header["DRPVER"].startswith("cruncher-") and "numpy" in header["DRPSOFT"]
    assert header["DATAFILE"] == science[0].name and header["FILETYPE"] == "Spectral Cube"
    assert any("Measure Contrast" in str(h) for h in header["HISTORY"])
    sci = fits.getheader(cube_of(root, science[0]), "SCI")
    assert sci["CTYPE3"] == "WAVE" and sci["CD3_3"] == pytest.approx(0.0084108, abs=1e-6)
    assert sci["CRVAL3"] == pytest.approx(1.4946054, abs=1e-6)
    for key in ("CONTR025", "CONTR040", "CONTR080"):
        assert 1e-7 < sci[key] < 1e-2
    contrast = root / "reduced" / f"{science[0].stem}_contrast.fits"
    table = fits.getdata(contrast, 1)
    assert len(table) > 50 and np.all(np.diff(table["SEP_ARCSEC"]) > 0)
    log = "\n".join(p.read_text() for p in (root / "logs").glob("gpi_drp_*.log"))
    assert f"File output to: {cube_of(root, science[0])}" in log
