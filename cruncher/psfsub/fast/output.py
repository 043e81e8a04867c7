"""The fast engine's products: pyKLIP's files from running sums instead of the full cube.

pyKLIP collapses its (KL, cube, wavelength, y, x) cube with NaN-aware means: in time for the
spectral cubes, then in wavelength (or weighted by the spectral template, for the T-dwarf
reduction) for the KL-mode cube. Sums of the finite values and their counts give the same means;
the files are then calibrated and written by pyKLIP's own dataset methods, with its headers.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sums:
    """Per KL cutoff and wavelength, the sum of the derotated residuals and their count.

    ``max_count`` bounds a count (the number of frames): it picks the smallest integer type. The
    sums are kept in float32 (88 MB less than float64 sums and int32 counts at 40 cubes): each is
    added once per wavelength, from a float64 sum over science frames, so this rounds once more
    than pyKLIP's float32 mean does, by at most one unit in the last place of float32.
    """

    n_cutoffs: int
    n_wvs: int
    shape: tuple[int, int]
    max_count: int = np.iinfo(np.int32).max
    total: np.ndarray = field(init=False)
    count: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        size = (self.n_cutoffs, self.n_wvs, *self.shape)
        self.total = np.zeros(size, np.float32)
        self.count = np.zeros(size, np.min_scalar_type(-self.max_count))   # a signed type

    def add(self, wv_index: int, total: np.ndarray, count: np.ndarray) -> None:
        self.total[:, wv_index] += total
        self.count[:, wv_index] += count

    def spectral_cubes(self) -> np.ndarray:
        """(KL, wavelength, y, x): the mean over time."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.maximum(self.count, 1),
                            np.nan).astype(np.float32)

    def weighted_collapse(self, template_per_wv: np.ndarray, template_mean: float) -> np.ndarray:
        """pyKLIP's template-weighted mean over time and wavelength."""
        weighted = (self.total * template_per_wv[None, :, None, None]).sum(axis=1)
        count = self.count.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, weighted / np.maximum(count, 1), np.nan)
        return (mean / template_mean).astype(np.float32)


def klip_params(mode, annuli, subsections, movement, numbasis, maxnumbasis, calibrate_flux,
                spectrum, highpass) -> str:
    """pyKLIP's ``klipparams`` header string (``{numbasis}`` left to fill)."""
    maxbasis = maxnumbasis if maxnumbasis is not None else np.max(numbasis)
    name = spectrum if isinstance(spectrum, str) else ("custom" if spectrum is not None else None)
    return (f"mode={mode},annuli={annuli},subsect={subsections},minmove={movement},"
            f"numbasis={{numbasis}}/{maxbasis},minrot=0,calibflux={calibrate_flux},"
            f"spectrum={name},highpass={highpass}, time_collapse=mean, skip_derot=False")


def write(dataset, sums: Sums, *, numbasis, template, mode, annuli, subsections, movement,
          maxnumbasis, calibrate_flux, spectrum, highpass, outputdir, fileprefix) -> None:
    from cruncher import __version__

    ny, nx = sums.shape
    centre = [int(nx // 2), int(ny // 2)]
    dataset.output_wcs = rotated_wcs(dataset)
    dataset.output_centers = np.tile(np.array(centre, float), (len(dataset.wvs), 1))
    dataset.klipparams = klip_params(mode, annuli, subsections, movement, numbasis, maxnumbasis,
                                     calibrate_flux, spectrum, highpass)
    dataset.creator = f"cruncher-{__version__} fast KLIP"
    outdir = os.path.realpath(outputdir or ".")
    cubes = sums.spectral_cubes()
    if sums.n_wvs > 1:
        for kl, cube in zip(numbasis, cubes):
            cube = cube.copy()
            if calibrate_flux:
                cube = dataset.calibrate_output(cube, spectral=True)
            dataset.savedata(os.path.join(outdir, f"{fileprefix}-KL{kl}-speccube.fits"), cube,
                             klipparams=dataset.klipparams.format(numbasis=kl),
                             filetype="PSF Subtracted Spectral Cube")
    if template is None or sums.n_wvs == 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            kl_cube = np.nanmean(cubes, axis=1)
    else:
        per_wv = np.asarray(template, float).reshape(-1, sums.n_wvs)[0]
        kl_cube = sums.weighted_collapse(per_wv, float(np.mean(template)))
    if calibrate_flux:
        kl_cube = dataset.calibrate_output(kl_cube, spectral=False)
    dataset.savedata(os.path.join(outdir, f"{fileprefix}-KLmodes-all.fits"), kl_cube,
                     klipparams=dataset.klipparams.format(
                         numbasis="[" + " ".join(str(k) for k in numbasis) + "]"),
                     filetype="KL Mode Cube", zaxis=list(numbasis))


def rotated_wcs(dataset):
    """The output WCS pyKLIP gives: each frame's WCS turned by its derotation angle."""
    from pyklip.klip import _rotate_wcs_hdr

    out = np.array([w.deepcopy() if w is not None else None for w in dataset.wcs])
    for angle, wcs in zip(dataset.PAs, out):
        if wcs is not None:
            _rotate_wcs_hdr(wcs, angle, flipx=bool(getattr(dataset, "flipx", False)))
    return out

