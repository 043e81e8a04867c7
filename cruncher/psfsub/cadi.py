"""Classical ADI (cADI): the quick stellar PSF subtraction of GPIES (seed 004, Appendix A.2.2).

Two reductions of a spectral-mode sequence:

- ``cadi``: collapse each cube to a broadband image (mean over wavelength), high-pass it with a
  Fourier filter whose smooth cutoff sits at four spatial cycles across the image, subtract the
  mean of the sequence, rotate every image north-up and collapse in time (mean);
- ``cadi_sdi``: the same after an SDI step, in which every slice of a cube first has the
  per-pixel median of that cube's slices subtracted (better for planets with sharp molecular
  absorption, worse for flat spectra).

Images are converted to contrast with the satellite spots (each cube's broadband ADU of a
contrast-1 point source) when the cubes have spot photometry, and left in ADU otherwise.
Rotation uses ``pyklip.klip.rotate`` with pyKLIP's angles and ``flipx=True`` and the same output
centre as pyKLIP's reductions (``(X // 2, Y // 2)``), so the two pipelines' images overlay.
cADI is fast (about 0.1 s a cube, 0.3 s with SDI), which is why the quicklook uses it.
"""
from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from cruncher.errors import BadInputError
from cruncher.instruments.gpi.optics import LENSLET_SCALE, fpm_radius_lenslets
from cruncher.psfsub import dataset as ds
from cruncher.psfsub import products, quicklook, snr
from cruncher.psfsub.job import JobFile, Product, Result

_log = logging.getLogger(__name__)

#: Smooth cutoff of the high-pass filter, in spatial cycles across the image.
HIGHPASS_CYCLES = 4.0
#: Less total rotation than this (deg) leaves ADI nothing to work with.
MIN_ROTATION_DEG = 0.5
#: Fraction of the cubes that must see a pixel for it to be kept in the final image.
MIN_COVERAGE = 0.5
#: SNR above which a local maximum is reported as a detection.
DETECTION_SNR = 5.0


# --- the algorithm ---------------------------------------------------------------------------


def highpass_fourier(image: np.ndarray, cycles: float = HIGHPASS_CYCLES) -> np.ndarray:
    """Remove spatial frequencies below about ``cycles`` cycles across the image.

    The FFT is multiplied by ``1 - exp(-(k / cycles)^2)``, with ``k`` in cycles per image
    (per axis length), a cutoff without ringing. NaN pixels are zero while filtering and NaN
    again afterwards.
    """
    image = np.asarray(image, dtype=np.float64)
    valid = np.isfinite(image)
    filled = np.where(valid, image, 0.0)
    ny, nx = image.shape
    ky = np.fft.fftfreq(ny) * ny
    kx = np.fft.rfftfreq(nx) * nx
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    response = 1.0 - np.exp(-k2 / cycles ** 2)
    out = np.fft.irfft2(np.fft.rfft2(filled) * response, s=image.shape)
    out[~valid] = np.nan
    return out


def output_centre(shape: tuple[int, ...]) -> tuple[float, float]:
    """Where the star sits in a cADI image: pyKLIP's default output centre ``(X//2, Y//2)``."""
    return float(shape[-1] // 2), float(shape[-2] // 2)


def check_usable(data: ds.Dataset, *, need_rotation: bool = True) -> None:
    """Refuse sequences ADI cannot reduce, with a reason a person understands. A quicklook
    (``need_rotation=False``) is made from the second cube on, rotation or not: early in a
    sequence the observer still wants to see the frames (and SDI works without rotation)."""
    first = data.paths[0] if data.paths else "<dataset>"
    if data.n_cubes < 2:
        raise BadInputError(first, f"{data.n_cubes} cube(s): ADI needs a sequence of at least 2")
    rotation = data.field_rotation
    if need_rotation and rotation < MIN_ROTATION_DEG:
        raise BadInputError(first, f"no field rotation ({rotation:.2f} deg over {data.n_cubes} "
                                   "cubes): ADI cannot separate planets from speckles")


def contrast_scale(data: ds.Dataset) -> np.ndarray | None:
    """Per cube, the broadband ADU of a contrast-1 point source; None without spot photometry.

    A cube whose spots were not measured takes the median of the others rather than making the
    whole sequence fall back to ADU.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_cube = np.nanmean(data.dn_per_contrast, axis=1)
    usable = np.isfinite(per_cube) & (per_cube > 0)
    if not usable.any():
        return None
    if not usable.all():
        _log.warning("%d of %d cubes have no spot photometry: using the sequence median",
                     int((~usable).sum()), data.n_cubes)
        per_cube = np.where(usable, per_cube, np.median(per_cube[usable]))
    return per_cube


def broadband(data: ds.Dataset, *, sdi: bool = False) -> np.ndarray:
    """(N, Y, X): each cube collapsed over wavelength (mean), after the SDI step if asked."""
    out = np.empty((data.n_cubes, *data.cubes.shape[2:]), dtype=np.float64)
    with warnings.catch_warnings():
        # Pixels outside the lenslet field are NaN in every slice.
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, cube in enumerate(data.cubes):
            if sdi:
                cube = cube - np.nanmedian(cube, axis=0)
            out[i] = np.nanmean(cube, axis=0)
    return out


def cadi(data: ds.Dataset, *, sdi: bool = False, cycles: float = HIGHPASS_CYCLES,
         need_rotation: bool = True) -> tuple[np.ndarray, tuple[float, float]]:
    """The cADI (or, with ``sdi``, SDI + cADI) image of a sequence and the star's (x, y) in it.

    The image is north-up, east-left, in contrast units when the cubes carry satellite-spot
    photometry (see :func:`contrast_scale`), in ADU otherwise (:func:`units` says which).
    """
    from pyklip.klip import rotate

    check_usable(data, need_rotation=need_rotation)
    images = broadband(data, sdi=sdi)
    scale = contrast_scale(data)
    if scale is not None:
        images /= scale[:, None, None]
    centre = output_centre(images.shape)
    star = np.nanmean(data.centers, axis=1)
    # Register every image on the common centre before the subtraction: the star (and the
    # speckles, which follow it) wanders by tenths of a pixel between cubes, and the mean of a
    # sequence only models speckles that sit still.
    for i in range(len(images)):
        images[i] = rotate(highpass_fourier(images[i], cycles), 0.0, star[i], new_center=centre)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        images -= np.nanmean(images, axis=0)
        derotated = np.stack([rotate(img, angle, centre, new_center=centre, flipx=True)
                              for img, angle in zip(images, data.angles)])
        final = np.nanmean(derotated, axis=0)
    # The field (a square of lenslets) turns with the sky: its corners are seen by few cubes,
    # and a mean of two or three residuals is noise that the SNR map would call planets.
    coverage = np.isfinite(derotated).sum(axis=0)
    final[coverage < max(2, MIN_COVERAGE * len(derotated))] = np.nan
    return final, centre


def snr_image(image: np.ndarray, centre: tuple[float, float], *, inner_px: float = 0.0
              ) -> np.ndarray:
    """:func:`snr.snr_map`, with the noise measured again without the sources it found.

    A bright planet dominates the scatter of its own annulus: left in, it lowers its own SNR
    and, where the noise falls steeply with separation, pulls the SNR peak outwards.
    """
    first = snr.snr_map(image, centre)
    found = snr.find_sources(first, centre, threshold=DETECTION_SNR, inner_px=inner_px)
    if not found:
        return first
    y, x = np.indices(image.shape)
    exclude = np.zeros(image.shape, dtype=bool)
    for source in found:
        exclude |= np.hypot(x - source["x"], y - source["y"]) < 2.0 * snr.DEFAULT_FWHM
    filtered = snr.matched_filter(image)
    with np.errstate(invalid="ignore", divide="ignore"):
        return filtered / snr.noise_by_separation(filtered, centre, exclude=exclude)


def units(data: ds.Dataset) -> str:
    """``contrast`` or ``ADU``: the unit :func:`cadi` returns for this dataset."""
    return "contrast" if contrast_scale(data) is not None else "ADU"


# --- jobs ------------------------------------------------------------------------------------


def run_cadi(job: JobFile) -> Result:
    """Job ``cadi``: the broadband cADI reduction; with ``params["quicklook"]`` both reductions
    and the four-panel quicklook display."""
    quick = bool(job.params.get("quicklook"))
    return _run(job, flavours=(False, True) if quick else (False,), quick=quick)


def run_cadi_sdi(job: JobFile) -> Result:
    """Job ``cadi_sdi``: the SDI + cADI reduction."""
    return _run(job, flavours=(True,), quick=bool(job.params.get("quicklook")))


def product_name(tag: str, sdi: bool, snr_map: bool = False, ext: str = "fits") -> str:
    """``cadi-S20160315-H.fits``, ``cadi-sdi-S20160315-H-snr.fits``..."""
    return f"cadi{'-sdi' if sdi else ''}-{tag}{'-snr' if snr_map else ''}.{ext}"


def _run(job: JobFile, *, flavours: tuple[bool, ...], quick: bool) -> Result:
    result = Result(job_id=job.id)
    start = time.perf_counter()
    data = ds.load(list(job.inputs))
    check_usable(data, need_rotation=not quick)
    result.timings["load_s"] = round(time.perf_counter() - start, 3)
    cycles = float(job.params.get("highpass_cycles", HIGHPASS_CYCLES))
    grade = "quicklook" if quick else "science"
    unit = units(data)
    # Inside the focal plane mask (and just outside its edge) there is nothing to detect.
    inner_px = fpm_radius_lenslets(data.band) + 2
    title = quicklook.title(data.target, data.band, data.date, data.n_cubes, data.field_rotation)
    if data.field_rotation < MIN_ROTATION_DEG:
        title += "  (too little rotation for ADI yet)"
    outdir = Path(job.outdir)
    panels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for sdi in flavours:
        algorithm = "cadi_sdi" if sdi else "cadi"
        tick = time.perf_counter()
        image, centre = cadi(data, sdi=sdi, cycles=cycles, need_rotation=not quick)
        snr_map = snr_image(image, centre, inner_px=inner_px)
        result.timings[f"{algorithm}_s"] = round(time.perf_counter() - tick, 3)
        params = {"algorithm": algorithm, "highpass_cycles": cycles, "sdi": sdi,
                  "collapse": "mean", "units": unit, "quicklook": quick}
        detections = snr.find_sources(snr_map, centre, threshold=DETECTION_SNR,
                                      inner_px=inner_px)
        extras = {"field_rotation": round(data.field_rotation, 3), "n_cubes": data.n_cubes,
                  "detections": detections, "units": params["units"]}
        tick = time.perf_counter()
        paths = _write_pair(outdir, job, data, algorithm, image, snr_map, centre, params)
        result.products += [Product(path=str(paths[0]), kind=algorithm, grade=grade,
                                    extras=extras),
                            Product(path=str(paths[1]), kind=f"{algorithm}_snr", grade=grade,
                                    extras=extras)]
        label = "cADI + SDI" if sdi else "cADI"
        png = quicklook.two_panel(outdir / product_name(data.tag, sdi, ext="png"), image,
                                  snr_map, title, label=label, centre=centre)
        result.figures.append(str(png))
        result.timings[f"{algorithm}_write_s"] = round(time.perf_counter() - tick, 3)
        panels[label] = (image, snr_map)
        _log.info("%s of %s: %d cubes, rotation %.1f deg, %d detection(s)", algorithm, data.tag,
                  data.n_cubes, data.field_rotation, len(detections))
    if quick and len(panels) == 2:
        tick = time.perf_counter()
        png = quicklook.four_panel(outdir / f"quicklook-cadi-{data.tag}.png", panels, title,
                                   centre=output_centre(data.cubes.shape))
        result.figures.append(str(png))
        result.products.append(Product(path=str(png), kind="quicklook_png", grade="quicklook",
                                       extras={"field_rotation": round(data.field_rotation, 3),
                                               "n_cubes": data.n_cubes}))
        result.timings["quicklook_png_s"] = round(time.perf_counter() - tick, 3)
    result.extras.update(tag=data.tag, target=data.target, band=data.band)
    return result


def _write_pair(outdir: Path, job: JobFile, data: ds.Dataset, algorithm: str, image: np.ndarray,
                snr_data: np.ndarray, centre: tuple[float, float], params: Mapping[str, Any]
                ) -> tuple[Path, Path]:
    """Write the reduced image and its SNR map; return their paths."""
    sdi = algorithm == "cadi_sdi"
    written = []
    for data_array, is_snr in ((image, False), (snr_data, True)):
        filetype = f"{'SNR map' if is_snr else 'Stellar PSF subtracted image'} ({algorithm})"
        primary = products.base_header(data.target, data.band, data.date, filetype)
        products.provenance(primary, job_id=job.id, algorithm=algorithm, inputs=data.paths,
                            params=params, raw_names=data.raw_names)
        primary["NCUBES"] = (data.n_cubes, "cubes in the sequence")
        primary["ROTATION"] = (round(data.field_rotation, 3), "total field rotation (deg)")
        extension = products.north_up_wcs(fits.Header(), centre, *_coordinates(data),
                                          LENSLET_SCALE)
        extension["BUNIT"] = "SNR" if is_snr else params["units"]
        path = outdir / product_name(data.tag, sdi, is_snr)
        written.append(products.write_image(path, data_array, primary=primary,
                                            extension=extension))
    return written[0], written[1]


def _coordinates(data: ds.Dataset) -> tuple[float | None, float | None]:
    """RA and Dec (deg) of the target from the first cube's primary header, if it has them."""
    header = data.headers[0] if data.headers else {}
    values = []
    for key in ("RA", "DEC"):
        try:
            values.append(float(header[key]))
        except (KeyError, TypeError, ValueError):
            values.append(None)
    return values[0], values[1]
