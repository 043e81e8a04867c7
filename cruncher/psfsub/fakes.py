"""Fake-planet runs: the general (L) or T-dwarf (T) reduction again, with planets injected.

Following GPIES (seed 004, A.2.3): 2-D Gaussian planets of an L- or T-type spectrum at the centre
of each of the nine KLIP annuli, at four position angles so that they spiral outward (the next
separation is on the next arm, 90 deg on), the second run with the spiral turned by 45 deg. Their
brightness is set from the dataset's own single-frame contrast (well above the final noise, far
below anything that would change the KL modes much). What was injected where is written next to
the product (``...-injected.json``) for the contrast job to measure.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cruncher.errors import BadInputError
from cruncher.instruments.gpi.optics import LENSLET_SCALE
from cruncher.psfsub import klip
from cruncher.psfsub.job import JobFile, Product, Result

FWHM = 3.5
#: How bright the fakes are: this times the single-frame 5-sigma contrast over the square root of
#: the number of cubes. KLIP gains several times more than that square root, so this lands the
#: fakes some tens of sigma above the final noise: measurable, yet in KLIP's linear regime (a
#: planet brighter than the speckles around it is partly modelled by the KL modes and loses more).
BRIGHTNESS = 1.0
SINGLE_FRAME_KEYS = {0.25: "CONTR025", 0.4: "CONTR040", 0.8: "CONTR080"}


def annulus_centres(dataset, annuli: int = 9, spacing: str = "log") -> list[float]:
    """The centres (px) of pyKLIP's annuli for this dataset, computed exactly as pyKLIP does."""
    from pyklip.klip import define_annuli_bounds

    image, centre = dataset.input[0], dataset.centers[0]
    y, x = np.indices(image.shape)
    nan = np.isnan(image)
    r2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2
    owa = np.sqrt(np.percentile(r2[nan], 1)) if nan.any() else np.sqrt(r2.max())
    bounds = define_annuli_bounds(annuli, dataset.IWA, owa, spacing)
    return [0.5 * (lo + hi) for lo, hi in bounds]


def spiral(separations: list[float], offset_deg: float) -> list[tuple[float, float]]:
    """(separation, PA): one planet per separation, each on the next of four arms."""
    return [(sep, (offset_deg + 90.0 * i) % 360.0) for i, sep in enumerate(separations)]


def single_frame_contrast(headers, separation_arcsec: float) -> float:
    """The DRP's single-frame 5-sigma contrast at a separation (median over cubes, log-interp)."""
    seps, values = [], []
    for sep, key in SINGLE_FRAME_KEYS.items():
        found = [float(h[key]) for h in headers if isinstance(h.get(key), float | int)]
        if found:
            seps.append(sep)
            values.append(np.median(found))
    if not seps:
        return 1e-4 * (0.25 / max(separation_arcsec, 0.1)) ** 1.5   # a typical GPI curve
    return float(np.exp(np.interp(separation_arcsec, seps, np.log(values))))


def spectrum_weights(planet_type: str, band: str, wavelengths: np.ndarray) -> np.ndarray:
    """Planet/star flux ratio per channel for a planet type, normalised to a mean of one."""
    from cruncher.instruments.gpi.sim.spectra import planet_to_star_ratio

    ratio = planet_to_star_ratio(planet_type, band, np.asarray(wavelengths), 1.0)
    return ratio / ratio.mean()


def fits_in_every_frame(dataset, sep_px: float, pa_deg: float, margin: float = 3 * FWHM) -> bool:
    """Whether a planet at (sep, PA) lands on valid pixels, away from the edges, in every frame."""
    from pyklip.fakes import convert_pa_to_image_polar

    ny, nx = dataset.input.shape[1:]
    for frame, centre, wcs in zip(dataset.input, dataset.centers, dataset.wcs):
        theta = np.radians(convert_pa_to_image_polar(pa_deg, wcs))
        x, y = centre[0] + sep_px * np.cos(theta), centre[1] + sep_px * np.sin(theta)
        if not (margin <= x <= nx - 1 - margin and margin <= y <= ny - 1 - margin):
            return False
        if not np.isfinite(frame[int(round(y)), int(round(x))]):
            return False
    return True


def inject(dataset, planets: list[dict], weights: np.ndarray) -> None:
    """Add Gaussian planets of the given contrasts to a pyKLIP dataset (in place)."""
    from pyklip.fakes import inject_planet

    for planet in planets:
        flux = planet["contrast"] * weights[dataset.wv_indices] * dataset.dn_per_contrast
        inject_planet(dataset.input, dataset.centers, flux, dataset.wcs, planet["sep_px"],
                      planet["pa_deg"], fwhm=FWHM)


def parse_name(name: str) -> tuple[str, float]:
    """``fakes_T_45`` -> (``T``, 45.0)."""
    try:
        _, kind, offset = name.split("_")
        if kind not in ("L", "T"):
            raise ValueError(kind)
        return kind, float(offset)
    except ValueError:
        raise BadInputError(name, f"not a fake-planet run name: {name!r} (e.g. fakes_L_0)") from None


def base_reduction(planet_type: str) -> str:
    return "klip_general" if planet_type == "L" else "klip_tdwarf"


def run_fakes(job: JobFile) -> Result:
    """A job: one injection run (``job.params["name"]`` like ``fakes_L_0``).

    The planets are the calibration spiral unless the job's parameters name them as ``planets``:
    a list of ``{"sep_px", "pa_deg", "contrast"}``.
    """
    name = job.params.get("name", job.algorithm)
    planets = job.params.get("planets")
    planet_type, offset = parse_name(name)
    injected: list[dict] = []

    def add_planets(dataset) -> None:
        from cruncher.psfsub.dataset import load

        light = load(list(job.inputs), pixels=False)
        wanted = planets
        if wanted is None:
            headers = _sci_headers(job.inputs)
            wanted = [{"sep_px": sep, "pa_deg": pa} for sep, pa in spiral(annulus_centres(dataset),
                                                                         offset)
                      if fits_in_every_frame(dataset, sep, pa)]
            for p in wanted:
                sf = single_frame_contrast(headers, p["sep_px"] * LENSLET_SCALE)
                p["contrast"] = float(np.clip(BRIGHTNESS * sf / np.sqrt(light.n_cubes), 1e-7, 1e-3))
        injected.extend(dict(p, planet_type=planet_type) for p in wanted)
        inject(dataset, injected, spectrum_weights(planet_type, light.band, light.wavelengths))

    facts, _, light = klip.run_reduction(base_reduction(planet_type), job.inputs, job.outdir,
                                         job.params, prefix_extra=f"-fakes-{planet_type}-{offset:g}",
                                         inject=add_planets)
    sidecar = Path(facts["kl_cube"].replace("-KLmodes-all.fits", "-injected.json"))
    sidecar.write_text(json.dumps({"planet_type": planet_type, "offset_deg": offset,
                                   "fwhm": FWHM, "planets": injected}, indent=1))
    params = {k: v for k, v in facts["params"].items() if k != "label"}
    klip.add_provenance([facts["kl_cube"]], job, light, params | {"fakes": name})
    result = Result(job_id=job.id, timings={"klip_s": round(facts["klip_seconds"], 2)})
    result.products.append(Product(path=facts["kl_cube"], kind=name, grade="calibration",
                                   extras={"injected": injected, "sidecar": str(sidecar)}))
    return result


def _sci_headers(paths) -> list:
    from astropy.io import fits

    return [fits.getheader(p, 1) for p in paths]
