"""Calibrated contrast curves for L- and T-type planets (seed 004, Appendix A.2.3).

The general (L) and T-dwarf (T) reductions, at one KL cutoff, are cross-correlated with a Gaussian
of FWHM 3.5 px; the noise is the standard deviation in concentric annuli, and with the
small-sample correction of Mawet et al. (2014) the 5-sigma-equivalent false-positive probability
2.9e-7 gives the uncalibrated contrast. The fake-planet runs calibrate it: each fake's flux, measured
with the same cross-correlation (the run's image minus the reduction without fakes, so speckles
cancel), divided by its injected contrast is the throughput at its separation. Inside 40 px the
correction is the linear interpolation between the two nearest measured factors; beyond 40 px it
is the mean of the factors measured there.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage
from scipy.stats import t as student_t

from cruncher.errors import BadInputError
from cruncher.instruments.gpi.optics import FIDUCIAL_SEPARATIONS, LENSLET_SCALE, fpm_radius_lenslets
from cruncher.psfsub import klip, products, snr
from cruncher.psfsub.dataset import load
from cruncher.psfsub.fakes import FWHM, base_reduction
from cruncher.psfsub.job import JobFile, Product, Result

_log = logging.getLogger(__name__)
FPF = 2.9e-7
CALIBRATION_SPLIT_PX = 40.0
OFFSETS = (0, 45)


def noise_curve(filtered: np.ndarray, centre: tuple[float, float], inner: float, outer: float,
                fwhm: float = FWHM, step: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(separations px, 5-sigma-equivalent threshold) of a matched-filtered image."""
    radius = snr.radius_map(filtered.shape, centre)
    seps, values = [], []
    for sep in np.arange(inner, outer, step):
        ring = filtered[(np.abs(radius - sep) < fwhm / 2) & np.isfinite(filtered)]
        if ring.size < 10:
            continue
        n = max(int(2 * np.pi * sep / fwhm), 2)      # independent resolution elements
        threshold = student_t.ppf(1 - FPF, n - 1) * ring.std(ddof=1) * np.sqrt(1 + 1 / n)
        seps.append(sep)
        values.append(threshold + ring.mean())
    return np.array(seps), np.array(values)


def fake_throughput(fake_image: np.ndarray, base_image: np.ndarray, centre: tuple[float, float],
                    planets: list[dict]) -> list[tuple[float, float]]:
    """(separation px, measured/injected) for each fake, from the matched-filtered difference."""
    difference = snr.matched_filter(fake_image - base_image, FWHM)
    out = []
    for planet in planets:
        pa = np.radians(planet["pa_deg"])
        x = centre[0] - planet["sep_px"] * np.sin(pa)
        y = centre[1] + planet["sep_px"] * np.cos(pa)
        value = ndimage.map_coordinates(np.nan_to_num(difference), [[y], [x]], order=1)[0]
        if np.isfinite(difference[int(round(y)), int(round(x))]):
            out.append((float(planet["sep_px"]), float(value / planet["contrast"])))
    return out


def correction(separations: np.ndarray, measured: list[tuple[float, float]]) -> np.ndarray:
    """Throughput at each separation: interpolated inside 40 px, the outer mean beyond."""
    if not measured:
        raise BadInputError("<contrast>", "no fake planet could be measured")
    by_sep: dict[float, list[float]] = {}
    for sep, factor in measured:
        by_sep.setdefault(round(sep, 3), []).append(factor)
    seps = np.array(sorted(by_sep))
    factors = np.array([np.mean(by_sep[s]) for s in seps])
    inner = np.interp(separations, seps, factors)
    outer_values = factors[seps > CALIBRATION_SPLIT_PX]
    outer = outer_values.mean() if outer_values.size else factors[-1]
    return np.where(separations <= CALIBRATION_SPLIT_PX, inner, outer)


def calibrated_curve(base: Path, fakes: list[Path], kl: int, band: str) -> dict:
    """The calibrated contrast curve of one planet type."""
    image, centre, _ = klip.kl_image(base, kl)
    filtered = snr.matched_filter(image, FWHM)
    outer = float(np.nanmax(np.where(np.isfinite(filtered), snr.radius_map(image.shape, centre),
                                     np.nan))) - FWHM
    seps, raw = noise_curve(filtered, centre, fpm_radius_lenslets(band) + FWHM / 2, outer)
    measured = []
    for fake in fakes:
        sidecar = json.loads(Path(str(fake).replace("-KLmodes-all.fits", "-injected.json"))
                             .read_text())
        fake_image, _, _ = klip.kl_image(fake, kl)
        measured += fake_throughput(fake_image, image, centre, sidecar["planets"])
    factors = correction(seps, measured)
    with np.errstate(divide="ignore", invalid="ignore"):
        calibrated = np.where(factors > 0, raw / factors, np.nan)
    return {"sep_px": seps, "sep_arcsec": seps * LENSLET_SCALE, "uncalibrated": raw,
            "throughput": factors, "contrast": calibrated, "measured": measured}


def fiducial(curve: dict) -> dict[str, float | None]:
    out = {}
    for sep in FIDUCIAL_SEPARATIONS:
        good = np.isfinite(curve["contrast"])
        inside = good.sum() >= 2 and curve["sep_arcsec"][good][0] <= sep <= curve["sep_arcsec"][good][-1]
        out[f"contrast_{int(round(sep * 100)):03d}"] = float(np.interp(
            sep, curve["sep_arcsec"][good], curve["contrast"][good])) if inside else None
    return out


def run_contrast(job: JobFile) -> Result:
    """A job: the calibrated L and T contrast curves of a dataset."""
    light = load(list(job.inputs), pixels=False)
    kl = int(job.params.get("contrast_kl", klip.DEFAULT_KL))
    outdir = Path(job.outdir)
    result = Result(job_id=job.id)
    curves = {}
    for planet_type in ("L", "T"):
        label = klip.reduction_params(base_reduction(planet_type), job.params)["label"]
        base = outdir / f"pyklip-{light.tag}-{label}-KLmodes-all.fits"
        fakes = [outdir / f"pyklip-{light.tag}-{label}-fakes-{planet_type}-{o}-KLmodes-all.fits"
                 for o in OFFSETS]
        missing = [p.name for p in [base, *fakes] if not p.exists()]
        if missing:
            raise BadInputError(str(outdir), f"contrast needs {', '.join(missing)}")
        curve = curves[planet_type] = calibrated_curve(base, fakes, kl, light.band)
        path = _write_curve(outdir / f"contrast-{light.tag}-{planet_type}.fits", curve, job, light,
                            planet_type, kl)
        result.products.append(Product(path=str(path), kind=f"contrast_{planet_type}", extras={
            "planet_type": planet_type, "calibrated": True, "kl": kl,
            "separation_arcsec": [round(float(s), 5) for s in curve["sep_arcsec"]],
            "contrast": [None if not np.isfinite(c) else float(c) for c in curve["contrast"]],
            "fiducial": fiducial(curve)}))
    result.figures.append(str(_plot(outdir / f"contrast-{light.tag}.png", curves, light)))
    return result


def _write_curve(path: Path, curve: dict, job: JobFile, light, planet_type: str, kl: int) -> Path:
    header = products.base_header(light.target, light.band, light.date, "Contrast Curve")
    header["PLNTTYPE"] = (planet_type, "planet spectral type")
    header["KLMODE"] = (kl, "KL cutoff measured")
    header["FPF"] = (FPF, "false-positive probability (5-sigma equivalent)")
    products.provenance(header, job_id=job.id, algorithm="contrast", inputs=job.inputs,
                        params={"kl": kl, "planet_type": planet_type}, raw_names=light.raw_names)
    columns = [fits.Column(name=n.upper(), format="D", array=np.asarray(curve[n], np.float64))
               for n in ("sep_px", "sep_arcsec", "uncalibrated", "throughput", "contrast")]
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(header=header),
                  fits.BinTableHDU.from_columns(columns, name="CONTRAST")]).writeto(path, overwrite=True)
    with open(path.with_suffix(".csv"), "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["sep_arcsec", "contrast", "uncalibrated", "throughput"])
        for row in zip(curve["sep_arcsec"], curve["contrast"], curve["uncalibrated"],
                       curve["throughput"]):
            writer.writerow([f"{v:.6g}" for v in row])
    return path


def _plot(path: Path, curves: dict, light) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for planet_type, curve in curves.items():
        ax.semilogy(curve["sep_arcsec"], curve["contrast"], label=f"{planet_type}-type (calibrated)")
    ax.set_xlabel("separation (arcsec)")
    ax.set_ylabel("5-sigma contrast")
    ax.set_title(f"{light.target}  {light.band}  {light.date[:4]}-{light.date[4:6]}-"
                 f"{light.date[6:]}  {light.n_cubes} cubes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
