"""The three pyKLIP reductions of GPIES (seed 004, Appendix A.2.2), run through pyKLIP itself.

- general: 11-px-FWHM Gaussian high-pass in Fourier space, ADI+SDI, 9 log-spaced annuli,
  4 subsections, movement 1 px, the 300 most correlated references, KL modes 1/10/20/30/50;
- T-dwarf: the same with pyKLIP's methane-weighted reference selection; pyKLIP then collapses the
  KL-mode cube in wavelength weighted by its T-dwarf template (``WVCOLLPS`` says so);
- disk: no high-pass, ADI only, KL modes 1/3/10/20/50.

Each writes a spectral cube per KL cutoff (collapsed in time) and the KL-mode cube (collapsed in
time and wavelength), in contrast units (the satellite spots calibrate the flux). pyKLIP is run
as its authors recommend from a service: one reduction per process (the job), BLAS threads at one
(the job runner sets that), ``lite`` when the full reduction would not fit in memory.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from cruncher.errors import BadInputError
from cruncher.psfsub import products, snr
from cruncher.psfsub.dataset import load as load_light
from cruncher.psfsub.job import JobFile, Product, Result

_log = logging.getLogger(__name__)

BASE = {"annuli": 9, "subsections": 4, "movement": 1.0, "maxnumbasis": 300,
        "annuli_spacing": "log"}
REDUCTIONS: dict[str, dict[str, Any]] = {
    "klip_general": {**BASE, "mode": "ADI+SDI", "highpass": 11.0, "spectrum": None,
                     "numbasis": [1, 10, 20, 30, 50], "label_suffix": ""},
    "klip_tdwarf": {**BASE, "mode": "ADI+SDI", "highpass": 11.0, "spectrum": "methane",
                    "numbasis": [1, 10, 20, 30, 50], "label_suffix": "methane"},
    "klip_disk": {**BASE, "mode": "ADI", "highpass": False, "spectrum": None,
                  "numbasis": [1, 3, 10, 20, 50], "label_suffix": "-disk"},
}
#: The KL cutoff detections and contrast curves are measured at.
DEFAULT_KL = 20
#: KLIP engines a job may ask for (``engine``): cruncher's fast one, or pyKLIP's own.
ENGINES = ("fast", "pyklip")
DEFAULT_ENGINE = "fast"
MIN_ROTATION_DEG = 0.5


def reduction_params(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters of reduction ``name`` with a job's overrides (only known keys)."""
    if name not in REDUCTIONS:
        raise BadInputError(name, f"unknown KLIP reduction {name!r} (known: {', '.join(REDUCTIONS)})")
    params = dict(REDUCTIONS[name])
    suffix = params.pop("label_suffix")
    for key, value in (overrides or {}).items():
        if key in params or key in ("lite", "numthreads", "detection_kl", "engine", "array"):
            params[key] = value
    params["numbasis"] = [int(k) for k in params["numbasis"]]
    params["label"] = label(params) + suffix
    params.setdefault("engine", DEFAULT_ENGINE)
    if params["engine"] not in ENGINES:
        raise BadInputError(name, f"unknown KLIP engine {params['engine']!r} "
                                  f"(known: {', '.join(ENGINES)})")
    return params


def label(params: Mapping[str, Any]) -> str:
    """``k<references>a<annuli>s<subsections>m<movement>``, as GPIES names its KLIP products
    (``k300a9s4m1`` for the survey's parameters), so that a file says how it was made."""
    return (f"k{int(params['maxnumbasis'])}a{int(params['annuli'])}s{int(params['subsections'])}"
            f"m{float(params['movement']):g}")


def memory_needed(n_frames: int, n_wv: int, n_kl: int, n_pix: int = 281 * 281) -> float:
    """Bytes pyKLIP needs without ``lite`` (measured model: 4 B x pixels x frames x (1+N_wv+N_KL))."""
    return 4.0 * n_pix * n_frames * (1 + n_wv + n_kl)


def available_memory() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 8e9


def check_usable(light, params: Mapping[str, Any]) -> None:
    """Refuse datasets KLIP cannot separate from the star, with a reason a person understands."""
    rotation = light.field_rotation
    if rotation < MIN_ROTATION_DEG:
        raise BadInputError(light.paths[0], f"no field rotation ({rotation:.2f} deg over "
                                            f"{light.n_cubes} cubes): ADI cannot separate planets "
                                            "from the star")
    from cruncher.instruments.gpi.optics import fpm_radius_lenslets

    iwa = fpm_radius_lenslets(light.band)
    arc = np.radians(rotation) * iwa
    if params["mode"] == "ADI" and arc < params["movement"]:
        raise BadInputError(light.paths[0], f"too few frames or too little rotation for the "
                                            f"movement criterion: {light.n_cubes} cubes rotate "
                                            f"{rotation:.2f} deg, {arc:.2f} px at the inner "
                                            f"working angle, {params['movement']} px needed")


def run_reduction(name: str, inputs: tuple[str, ...], outdir: str, overrides: Mapping[str, Any],
                  *, prefix_extra: str = "", inject=None) -> tuple[dict[str, Any], Any, Any]:
    """Run one pyKLIP reduction; return (paths and facts, pyKLIP dataset, light dataset).

    ``inject(dataset)`` may add fake planets to pyKLIP's dataset before KLIP runs.
    """
    from pyklip.instruments.GPI import GPIData

    params = reduction_params(name, overrides)
    light = load_light(list(inputs), pixels=False)    # pyKLIP's GPIData reads the pixels
    check_usable(light, params)
    n_wv, ny, nx = light.cube_shape
    n_frames, n_pix = light.n_cubes * n_wv, ny * nx
    lite = params.get("lite")
    if params["engine"] == "fast":
        lite = False      # the fast engine never holds the full cube
    elif lite is None:
        lite = memory_needed(n_frames, n_wv, len(params["numbasis"]), n_pix) \
            > 0.6 * available_memory()
    threads = int(params.get("numthreads") or os.cpu_count() or 1)
    dataset = GPIData(list(inputs), highpass=False, quiet=True)
    if inject is not None:
        inject(dataset)
    prefix = f"pyklip-{light.tag}-{params['label']}{prefix_extra}"
    Path(outdir).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    common = dict(mode=params["mode"], outputdir=outdir, fileprefix=prefix,
                  annuli=params["annuli"], subsections=params["subsections"],
                  movement=params["movement"], numbasis=params["numbasis"], numthreads=threads,
                  calibrate_flux=True, annuli_spacing=params["annuli_spacing"],
                  maxnumbasis=params["maxnumbasis"], spectrum=params["spectrum"],
                  highpass=params["highpass"])
    if params["engine"] == "fast":
        from cruncher.psfsub.fast.engine import klip_dataset as fast_klip_dataset

        fast_klip_dataset(dataset, array=params.get("array"), **common)
    else:
        from pyklip.parallelized import klip_dataset

        klip_dataset(dataset, lite=bool(lite), time_collapse="mean", verbose=False, **common)
    seconds = time.perf_counter() - start
    kl_cube = Path(outdir) / f"{prefix}-KLmodes-all.fits"
    if not kl_cube.exists():
        raise BadInputError(inputs[0], f"pyKLIP wrote no {kl_cube.name}")
    _log.info("%s (%s engine) took %.1f s", name, params["engine"], seconds)
    facts = {"prefix": prefix, "kl_cube": str(kl_cube), "params": params, "lite": bool(lite),
             "klip_seconds": seconds, "speccubes": sorted(str(p) for p in Path(outdir).glob(
                 f"{prefix}-KL*-speccube.fits"))}
    _check_output(kl_cube, inputs)
    return facts, dataset, light


def _check_output(kl_cube: Path, inputs) -> None:
    data = fits.getdata(kl_cube)
    if not np.isfinite(data).any():
        raise BadInputError(inputs[0], "KLIP produced no valid pixels: too few frames or too "
                                       "little rotation for the movement criterion")


def kl_image(path: str | Path, kl: int) -> tuple[np.ndarray, tuple[float, float], fits.Header]:
    """The KL-mode cube's image at cutoff ``kl`` (or the nearest), its star centre and header."""
    with fits.open(path) as hdul:
        hdu = hdul[1] if len(hdul) > 1 and hdul[1].data is not None else hdul[0]
        data, header = np.asarray(hdu.data, np.float64), hdu.header.copy()
    image, centre, _ = kl_plane(data, header, kl)
    return image, centre, header


def kl_plane(cube: np.ndarray, header: fits.Header, kl: int
             ) -> tuple[np.ndarray, tuple[float, float], int]:
    """The plane of a KL-mode cube nearest cutoff ``kl``: (image, star centre, its cutoff)."""
    modes = kl_modes(header, cube.shape[0])
    index = int(np.argmin(np.abs(np.array(modes) - kl)))
    centre = (float(header.get("PSFCENTX", cube.shape[2] // 2)),
              float(header.get("PSFCENTY", cube.shape[1] // 2)))
    return cube[index], centre, modes[index]


def kl_modes(header: fits.Header, planes: int) -> list[int]:
    """The KL cutoff of each plane: ``KLMODE0``, ``KLMODE1``, ... in numeric order (as text,
    KLMODE10 would sort before KLMODE2)."""
    keys = sorted((k for k in header if k.startswith("KLMODE") and k[6:].isdigit()),
                  key=lambda k: int(k[6:]))
    return [int(header[k]) for k in keys] or list(range(planes))


def add_provenance(paths: list[str], job: JobFile, light, params: Mapping[str, Any]) -> None:
    for path in paths:
        with fits.open(path, mode="update") as hdul:
            header = hdul[0].header
            products.provenance(header, job_id=job.id, algorithm=job.algorithm,
                                inputs=job.inputs, params=params, raw_names=light.raw_names)
            header["OBJECT"] = light.target
            if params.get("spectrum") == "methane" and path.endswith("-KLmodes-all.fits"):
                header["WVCOLLPS"] = ("T-dwarf weighted", "pyKLIP methane template")


def run_klip(job: JobFile) -> Result:
    """A job running one of the three reductions (``job.params["name"]`` or the algorithm)."""
    name = job.params.get("name", job.algorithm)
    facts, _, light = run_reduction(name, job.inputs, job.outdir, job.params)
    params = {k: v for k, v in facts["params"].items() if k != "label"} | {"lite": facts["lite"]}
    add_provenance([facts["kl_cube"], *facts["speccubes"]], job, light, params)
    result = Result(job_id=job.id, timings={"klip_s": round(facts["klip_seconds"], 2)})
    extras: dict[str, Any] = {"field_rotation": round(light.field_rotation, 3),
                              "n_cubes": light.n_cubes, "lite": facts["lite"]}
    if name == "klip_general":
        kl = int(job.params.get("detection_kl", DEFAULT_KL))
        image, centre, _ = kl_image(facts["kl_cube"], kl)
        from cruncher.instruments.gpi.optics import fpm_radius_lenslets

        extras["detections"] = snr.detect(image, centre,
                                          inner_px=fpm_radius_lenslets(light.band) + 2)
        extras["detection_kl"] = kl
    result.products.append(Product(path=facts["kl_cube"], kind=name, extras=extras))
    result.products += [Product(path=p, kind=f"{name}_speccube") for p in facts["speccubes"]]
    return result
