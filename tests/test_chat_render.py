"""The chat's images: a synthetic general KLIP product (pyKLIP's file layout) drawn and read back."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from cruncher.chat import render
from cruncher.errors import BadInputError
from cruncher.instruments.gpi.optics import LENSLET_SCALE
from cruncher.psfsub import products

SIZE = 101
CENTRE = (50.0, 50.0)
PLANET = (0.4, 60.0, 2e-5)           # separation (arcsec), PA (deg), peak contrast
KL_MODES = (1, 10, 20, 30, 50)
TITLE = "HD 95086 2016-03-15 H-Spec"
CURVE = {0.2: 8e-5, 0.3: 4e-5, 0.5: 1e-5, 0.9: 2e-6}    # separation (arcsec) -> contrast
NAN_GREY = 0.25                      # quicklook's colour outside the field


def planet_xy(sep_arcsec: float = PLANET[0], pa_deg: float = PLANET[1]) -> tuple[float, float]:
    """Where a source at (sep, PA) lies in a north-up, east-left image."""
    sep = sep_arcsec / LENSLET_SCALE
    return (CENTRE[0] - sep * np.sin(np.radians(pa_deg)),
            CENTRE[1] + sep * np.cos(np.radians(pa_deg)))


def image(planet_at: tuple[float, float] | None, seed: int = 1) -> np.ndarray:
    """Correlated noise (1e-6) with NaN outside the field and inside the mask, a Gaussian planet."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    data = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), 1.0)
    data *= 1e-6 / data.std()
    y, x = np.indices(data.shape)
    r = np.hypot(x - CENTRE[0], y - CENTRE[1])
    if planet_at is not None:
        sigma = 3.5 / 2.3548
        data += PLANET[2] * np.exp(-((x - planet_at[0]) ** 2 + (y - planet_at[1]) ** 2)
                                   / (2 * sigma ** 2))
    data[(r > 0.47 * SIZE) | (r < 9)] = np.nan
    return data


def write_product(directory: Path, data: np.ndarray | None = None, *, pc=None,
                  drop: tuple[str, ...] = (), modes=KL_MODES) -> Path:
    """A KL-mode cube laid out as pyKLIP's (primary header, SCI extension, KLMODEi, PC WCS)."""
    data = image(planet_xy()) if data is None else data
    primary = fits.Header()
    for key, value in {"OBJECT": "HD 95086", "DATE-OBS": "2016-03-15",
                       "IFSFILT": "IFSFILT_H_G1213", "DISPERSR": "DISP_PRISM_G6262",
                       "FILETYPE": "KL Mode Cube"}.items():
        if key not in drop:
            primary[key] = value
    ext = fits.Header()
    s = LENSLET_SCALE / 3600.0
    pc = np.array([[-s, 0.0], [0.0, s]]) if pc is None else np.asarray(pc)
    ext.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
                "CRVAL1": 146.0, "CRVAL2": -68.6, "CRPIX1": CENTRE[0] + 1, "CRPIX2": CENTRE[1] + 1,
                "PC1_1": pc[0, 0], "PC1_2": pc[0, 1], "PC2_1": pc[1, 0], "PC2_2": pc[1, 1],
                "CDELT1": 1, "CDELT2": 1, "CTYPE3": "KLMODES", "FUNIT": "contrast",
                "PSFCENTX": CENTRE[0], "PSFCENTY": CENTRE[1]})
    for i, kl in enumerate(modes):
        ext[f"KLMODE{i}"] = kl
    cube = np.repeat(data[None], len(modes), axis=0)
    path = directory / "pyklip-S20160315-H-k300a9s4m1-KLmodes-all.fits"
    fits.HDUList([fits.PrimaryHDU(header=primary),
                  fits.ImageHDU(cube, header=ext, name="SCI")]).writeto(path, overwrite=True)
    return path


def write_curve(directory: Path, planet_type: str = "L") -> Path:
    """``contrast-<tag>-<type>.fits`` as contrast.run_contrast writes it."""
    header = products.base_header("HD 95086", "H", "20160315", "Contrast Curve")
    header["PLNTTYPE"] = planet_type
    sep = np.array(sorted(CURVE))
    value = np.array([CURVE[s] for s in sep]) * (1.0 if planet_type == "L" else 0.5)
    columns = [fits.Column(name=n, format="D", array=a) for n, a in (
        ("SEP_PX", sep / LENSLET_SCALE), ("SEP_ARCSEC", sep), ("UNCALIBRATED", value / 2),
        ("THROUGHPUT", np.full(sep.size, 0.5)), ("CONTRAST", value))]
    path = directory / f"contrast-S20160315-H-{planet_type}.fits"
    fits.HDUList([fits.PrimaryHDU(header=header),
                  fits.BinTableHDU.from_columns(columns, name="CONTRAST")]).writeto(path)
    return path


def brightness(rgba: np.ndarray) -> np.ndarray:
    return rgba[..., :3].sum(axis=-1)


def test_klip_png_shows_the_planet_north_up(tmp_path):
    product = write_product(tmp_path)
    write_curve(tmp_path)
    summary = render.klip_png(product, tmp_path / "out" / "klip.png")
    from matplotlib.image import imread

    png = imread(summary.png)
    assert png.shape[:2] == (round(render.FIGSIZE[1] * render.DPI),
                             round(render.FIGSIZE[0] * render.DPI))
    fig = render.figure(render.load(product))
    col, row = render.planet_pixel(fig, *planet_xy())
    (left, top), (right, bottom) = (render.planet_pixel(fig, -0.5, SIZE - 0.5),
                                    render.planet_pixel(fig, SIZE - 0.5, -0.5))
    assert 0 < left < col < right < png.shape[1] and 0 < top < row < bottom < png.shape[0]
    area = brightness(png[top + 2:bottom - 2, left + 2:right - 2])
    planet = brightness(png[row - 1:row + 2, col - 1:col + 2]).max()
    assert planet > 1.8 * np.median(area) and planet > 2.2        # inferno's top: pale yellow
    # A point on the far side of the star (same separation) is speckle, not planet.
    far_col, far_row = render.planet_pixel(fig, *planet_xy(PLANET[0], PLANET[1] + 180))
    assert brightness(png[far_row, far_col]) < planet - 0.5
    # Outside the field (a NaN corner): quicklook's grey, not the colour of zero.
    corner_col, corner_row = render.planet_pixel(fig, 3, 3)
    assert np.allclose(png[corner_row, corner_col, :3], NAN_GREY, atol=2 / 255)
    ax = next(a for a in fig.axes if a.get_label() == "image")
    assert ax.images[0].colorbar.ax.get_ylabel() == "Contrast"
    assert fig._suptitle.get_text() == summary.title == TITLE
    assert summary.kl == 20
    (sep, pa, value), = summary.detections
    assert sep == pytest.approx(PLANET[0], abs=0.02) and pa == pytest.approx(PLANET[1], abs=2)
    assert value > 10


def test_summary_text_has_title_snr_and_contrast(tmp_path):
    product = write_product(tmp_path)
    write_curve(tmp_path)
    summary = render.klip_png(product, tmp_path / "klip.png")
    text = summary.text()
    assert TITLE in text
    (sep, pa, value), = summary.detections
    assert f'1 point source: {sep:.2f}" at PA {pa:.0f} deg, SNR {value:.1f}' in text
    want = {"0.25": 6e-5, "0.4": 2.5e-5, "0.8": 4e-6}          # linear interpolation of CURVE
    assert summary.contrast_at == pytest.approx(want)
    for value in want.values():
        assert f"{value:.1e}" in text


def test_given_detections_and_no_curve(tmp_path):
    product = write_product(tmp_path)
    given = [{"x": 70.0, "y": 23.0, "sep_arcsec": 0.52, "pa_deg": 143.2, "snr": 9.87},
             {"x": 30.0, "y": 30.0, "sep_arcsec": 0.4, "pa_deg": 45.0, "snr": 3.0}]
    summary = render.klip_png(product, tmp_path / "klip.png", detections=given)
    assert summary.detections == [(0.52, 143.2, 9.87)]                # below SNR 5: left out
    assert '1 point source: 0.52" at PA 143 deg, SNR 9.9' in summary.text()
    assert summary.contrast_at == {"0.25": None, "0.4": None, "0.8": None}
    assert "contrast" not in summary.text()
    empty = write_product(tmp_path, image(None))
    assert "no point source above SNR 5" in render.klip_png(empty, tmp_path / "e.png").text()


def test_kl_cutoff_is_the_nearest_one(tmp_path):
    product = write_product(tmp_path, modes=(1, 5, 25, 50))
    assert render.load(product, detections=[]).kl == 25          # nearest to DEFAULT_KL (20)
    assert render.load(product, kl=40, detections=[]).kl == 50


@pytest.mark.parametrize("angle, flip", [(30.0, False), (0.0, True)])
def test_a_product_not_north_up_is_turned_by_its_wcs(tmp_path, angle, flip):
    """The planet's PA and separation come out as the WCS says they are on the sky."""
    from astropy.wcs import WCS

    s = LENSLET_SCALE / 3600.0
    a = np.radians(angle)
    pc = s * np.array([[-np.cos(a), np.sin(a)], [np.sin(a), np.cos(a)]])
    if flip:
        pc[0] *= -1
    at = (CENTRE[0] - 20.0, CENTRE[1] + 14.0)
    product = write_product(tmp_path, image(at), pc=pc)
    wcs = WCS(fits.getheader(product, 1), naxis=2)
    star, planet = wcs.pixel_to_world([CENTRE[0], at[0]], [CENTRE[1], at[1]])
    summary = render.klip_png(product, tmp_path / "klip.png")
    (sep, pa, _), = summary.detections
    assert pa == pytest.approx(star.position_angle(planet).deg, abs=2)
    assert sep == pytest.approx(star.separation(planet).arcsec, abs=0.02)


def test_contrast_png(tmp_path):
    curves = [write_curve(tmp_path, "L"), write_curve(tmp_path, "T")]
    path = render.contrast_png(curves, tmp_path / "contrast.png")
    from matplotlib.image import imread

    assert imread(path).shape[:2] == (round(render.CURVE_FIGSIZE[1] * render.DPI),
                                      round(render.CURVE_FIGSIZE[0] * render.DPI))
    ax = render.contrast_figure(curves).axes[0]
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["L-type", "T-type"]
    assert ax.get_title() == TITLE and ax.get_xlabel() == "separation (arcsec)"


@pytest.mark.filterwarnings("ignore:File may have been truncated")
@pytest.mark.parametrize("case, reason", [
    ("missing", "no such file"),
    ("not fits", "not a readable FITS file"),
    ("truncated", "not a readable FITS file"),
    ("all nan", "no valid pixels"),
    ("no object", "missing header keyword(s) OBJECT, DATE-OBS"),
    ("two-d", "is 3-D"),
])
def test_bad_products_are_refused(tmp_path, case, reason):
    path = tmp_path / "pyklip-S20160315-H-k300a9s4m1-KLmodes-all.fits"
    if case == "not fits":
        path.write_text("not a FITS file")
    elif case == "truncated":
        path.write_bytes(write_product(tmp_path).read_bytes()[:20000])
    elif case == "all nan":
        write_product(tmp_path, np.full((SIZE, SIZE), np.nan))
    elif case == "no object":
        write_product(tmp_path, drop=("OBJECT", "DATE-OBS"))
    elif case == "two-d":
        fits.PrimaryHDU(np.zeros((SIZE, SIZE))).writeto(path)
    with pytest.raises(BadInputError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        render.klip_png(path, tmp_path / "klip.png")
    assert not (tmp_path / "klip.png").exists()


def test_bad_curves_are_refused(tmp_path):
    with pytest.raises(BadInputError, match="no contrast curve"):
        render.contrast_png([], tmp_path / "c.png")
    with pytest.raises(BadInputError, match="no such file"):
        render.contrast_png([tmp_path / "contrast-S20160315-H-L.fits"], tmp_path / "c.png")
    with pytest.raises(BadInputError, match="not a contrast curve"):
        render.contrast_png([write_product(tmp_path)], tmp_path / "c.png")
