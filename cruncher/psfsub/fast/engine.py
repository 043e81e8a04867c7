"""``klip_dataset`` for the fast engine: the same inputs, mathematics and files as pyKLIP's.

The dataset is pyKLIP's own (``GPIData``: reading, centring, fake injection and flux calibration
stay pyKLIP's). What changes is how the work is organised:

1. the high-pass filter is pyKLIP's (nearest-pixel NaN filling, Gaussian filter in Fourier space),
   done in place for all frames at once, followed by the spline coefficients of every frame
   (:mod:`~cruncher.psfsub.fast.prepare`);
2. each target wavelength is one task: align and scale every frame to it (``resample``), KLIP
   every section for all its science frames (``core``), derotate the residuals and add them to
   running sums, so the full (KL, frame, y, x) cube pyKLIP holds in memory never exists;
3. the tasks run in worker processes (BLAS single-threaded in each, freed memory kept for the
   next task: :mod:`~cruncher.psfsub.fast.heap`), or in the calling process on a GPU;
4. the running sums are the time-collapsed spectral cubes and the wavelength-collapsed KL-mode
   cube, calibrated and written with pyKLIP's own ``calibrate_output`` and ``savedata``.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from cruncher.psfsub.fast import (derotation, gather, gaussian, heap, prefilter, prepare,
                                  resample, tridiagonal)
from cruncher.psfsub.fast.core import Frames, Settings, finite_somewhere, klip_section
from cruncher.psfsub.fast.sections import sections
from cruncher.psfsub.fast.smoothing import Smoother
from cruncher.xp import array_module, to_numpy

_log = logging.getLogger(__name__)
#: Frames resampled per batch.
BATCH = prepare.BATCH


@dataclass
class Task:
    """Everything one wavelength's KLIP needs; shared with worker processes by fork."""

    coeffs: np.ndarray        # (F, Y, X) spline coefficients of the (high-passed) frames
    nanmask: np.ndarray       # (F, Y, X) NaN in the input frames
    centers: np.ndarray       # (F, 2)
    frames: Frames
    settings: Settings
    iwa: float
    owa: float | None
    annuli: int
    subsections: int
    spacing: str
    flipx: bool
    out_center: tuple[int, int]


_TASK: Task | None = None
_ROTATIONS: dict = {}


#: Derotation operators kept per process where the derotation is not compiled (about 13 MB each
#: for 281 x 281 images).
MAX_ROTATIONS = 64


def _derotate(images, frame: int, center, xp: ModuleType):
    """One science frame's images (B, Y, X) derotated as pyKLIP does: compiled on the CPU, else
    by the frame's sparse operator, built once and kept."""
    key = _rotation_key(frame, center)
    if _compiled_derotation(xp):
        return derotation.rotate(images, key[0], key[1:], _TASK.out_center, _TASK.flipx)
    return resample.rotate(images, _rotation(key, images.shape[1:], xp), xp)


def _compiled_derotation(xp: ModuleType) -> bool:
    return xp is np and derotation.available()


def _rotation(key, shape, xp):
    """The derotation operator for (angle, centre x, centre y), built once and kept."""
    if key not in _ROTATIONS:
        if len(_ROTATIONS) >= MAX_ROTATIONS:
            _ROTATIONS.clear()
        angle, cx, cy = key
        task = _TASK
        _ROTATIONS[key] = resample.rotation_operator(shape, angle, (cx, cy), task.out_center,
                                                     task.flipx, xp)
    return _ROTATIONS[key]


def _rotation_key(frame: int, center) -> tuple[float, float, float]:
    return (float(_TASK.frames.parangs[frame]), float(center[0]), float(center[1]))


def klip_wavelength(members: np.ndarray, wv_index: int, ref_wv: float, xp: ModuleType = np):
    """KLIP at one wavelength of the frames ``members`` (all frames for SDI, one wavelength's for
    ADI); returns the derotated residuals summed over science frames and their counts, both
    (n_cutoffs, Y, X)."""
    return _collapse(*klip_sections(members, wv_index, ref_wv, xp), members, xp)


def klip_sections(members: np.ndarray, wv_index: int, ref_wv: float, xp: ModuleType = np,
                  share: tuple[int, int] | None = None):
    """The residuals of one wavelength's sections: ``(pieces, science rows, centre)``, where
    ``pieces`` yields ``(pixels, residuals (n_sci, n_cutoffs, pixels))`` as it computes them.
    ``share = (k, n)`` takes only the sections of every n-th parent box from the k-th (so that
    the last wavelength can be shared among workers; a parent's sections share their
    smoothing)."""
    task = _TASK
    members = np.asarray(members)
    centers = task.centers[members]
    center = centers.mean(axis=0)
    aligned = _aligned(members, ref_wv, center, xp)
    frames = Frames(task.frames.parangs[members], task.frames.wvs[members],
                    task.frames.filenums[members])
    sci = np.flatnonzero(frames.wvs == ref_wv)
    first = np.where(task.nanmask[members[0]], np.nan, 0.0)
    parts = sections(aligned.shape[1:], center, task.iwa, task.owa, task.annuli,
                     task.subsections, task.spacing, first, centers[0])
    smoother = Smoother(aligned, parts, xp)
    order = smoother.order()
    if share is not None:
        parents = sorted({smoother.plans[i].parent for i in order})[share[0]::share[1]]
        order = [i for i in order if smoother.plans[i].parent in parents]
    return _residuals(aligned, sci, frames, parts, order, smoother, wv_index, xp), sci, center


def _residuals(aligned, sci, frames: Frames, parts, order: list[int], smoother: Smoother,
               wv_index: int, xp: ModuleType):
    """Yields ``(pixels, residuals)`` section by section, so that each can be put in place and
    let go (a generator, not a closure: its frames are released once it is exhausted)."""
    settings = _TASK.settings
    somewhere = finite_somewhere(aligned, xp)
    for index in order:
        smoothed = smoother.section(index) if settings.corr_smooth > 0 else None
        residual = klip_section(aligned, sci, parts[index], frames, settings, wv_index, xp,
                                somewhere, smoothed)
        if residual is not None:
            yield parts[index].pixels, residual


def _aligned(members: np.ndarray, ref_wv: float, center, xp: ModuleType):
    """(F, Y, X) float32: every frame of ``members`` aligned to ``center`` and scaled to
    ``ref_wv``, a batch at a time."""
    task = _TASK
    f, ny, nx = len(members), *task.coeffs.shape[1:]
    centers = task.centers[members]
    aligned = xp.empty((f, ny, nx), xp.float32)
    scales = ref_wv / task.frames.wvs[members]
    contiguous = bool(np.all(np.diff(members) == 1))
    for lo in range(0, f, BATCH):
        part = members[lo:lo + BATCH]
        pick = slice(part[0], part[-1] + 1) if contiguous else part   # a slice does not copy
        aligned[lo:lo + len(part)] = resample.align_and_scale(
            xp.asarray(task.coeffs[pick]), xp.asarray(task.nanmask[pick]), centers[lo:lo + BATCH],
            scales[lo:lo + BATCH], center, xp)
    return aligned


def _collapse(pieces, sci: np.ndarray, center, members: np.ndarray, xp: ModuleType,
              threads: int = 1):
    """The sections' residuals (an iterable of ``(pixels, residuals)``) put together, blanked
    where pyKLIP blanks them, derotated and summed over science frames: (total, count), both
    (n_cutoffs, Y, X). With ``threads`` > 1 (the parent process, on the CPU) the frames are
    derotated on that many threads (the compiled derotation releases the GIL), and summed in
    the same order."""
    task = _TASK
    ny, nx = task.coeffs.shape[1:]
    n_cut = len(task.settings.numbasis)
    out = xp.full((len(sci), n_cut, ny * nx), xp.nan, xp.float32)
    for pixels, residual in pieces:
        out[:, :, xp.asarray(pixels)] = xp.asarray(residual)
    # pyKLIP blanks the pixels that were NaN in each science frame's *input*
    input_nan = xp.asarray(task.nanmask[members[sci]].reshape(len(sci), -1))
    out[xp.broadcast_to(input_nan[:, None, :], out.shape)] = xp.nan
    out = out.reshape(len(sci), n_cut, ny, nx)
    total = xp.zeros((n_cut, ny, nx), xp.float64)
    count = xp.zeros((n_cut, ny, nx), xp.int32)
    frames = members[sci]

    def derotated(row: int):
        return _derotate(out[row], frames[row], center, xp)

    if threads > 1 and _compiled_derotation(xp):
        with ThreadPoolExecutor(threads) as pool:
            _accumulate(pool.map(derotated, range(len(sci))), total, count, xp)
    else:
        _accumulate(map(derotated, range(len(sci))), total, count, xp)
    return to_numpy(total), to_numpy(count)


def _accumulate(images, total, count, xp: ModuleType) -> None:
    """``total`` += each image's finite values, ``count`` += where it is finite, in order."""
    for image in images:
        finite = xp.isfinite(image)
        total += xp.where(finite, image, 0)
        count += finite


def _worker(job):
    members, wv_index, ref_wv, share = job
    if share is None:
        return wv_index, share, klip_wavelength(members, wv_index, ref_wv)
    pieces, sci, center = klip_sections(members, wv_index, ref_wv, np, share)
    return wv_index, share, (list(pieces), sci, center)


def schedule(groups: list[tuple[np.ndarray, int, float]], workers: int) -> list[tuple]:
    """Jobs ``(members, wv_index, ref_wv, share)`` for the workers: one per wavelength, except
    that the wavelengths left over after the last full round are each shared among the workers
    (``share = (k, n)``), so that no worker idles through a whole wavelength at the end."""
    left_over = len(groups) % workers if workers > 1 else 0
    whole = [(*group, None) for group in groups[:len(groups) - left_over]]
    if not left_over:
        return whole
    n = max(2, workers // left_over)
    return whole + [(*group, (k, n)) for group in groups[len(groups) - left_over:]
                    for k in range(n)]


def run_all(task: Task, groups: list[tuple[np.ndarray, int, float]], workers: int,
            xp: ModuleType = np):
    """Run :func:`klip_wavelength` for every (members, wv_index, ref_wv); yields results."""
    global _TASK
    _TASK = task
    _ROTATIONS.clear()
    try:
        if "SDI" in task.settings.mode.upper() and not _compiled_derotation(xp):
            # one centre for every wavelength: build the derotations before the workers fork, so
            # they share one copy of them
            members = groups[0][0]
            center = task.centers[members].mean(axis=0)
            shape = task.coeffs.shape[1:]
            for frame in members[task.frames.wvs[members] == groups[0][2]]:
                _rotation(_rotation_key(frame, center), shape, xp)
        if xp is np:
            warm_up()
        if xp is not np or workers <= 1:
            with heap.freed_memory_kept():
                for members, wv_index, ref_wv in groups:
                    yield wv_index, klip_wavelength(members, wv_index, ref_wv, xp)
            return
        yield from _in_workers(groups, workers)
    finally:
        _TASK = None
        _ROTATIONS.clear()


def warm_up() -> None:
    """Load (or compile) the compiled loops, so that the workers fork with them."""
    for module in (prefilter, resample, derotation, gaussian, tridiagonal, gather):
        module.warm_up()


def _in_workers(groups, workers: int):
    """:func:`run_all` in forked worker processes; a shared wavelength's sections are put
    together, derotated and summed here once all its shares are in."""
    members_of = {wv_index: members for members, wv_index, _ in groups}
    shares: dict[int, list] = {}
    context = multiprocessing.get_context("fork")
    with context.Pool(workers, initializer=heap.keep_freed_memory) as pool:
        for wv_index, share, result in pool.imap_unordered(_worker, schedule(groups, workers)):
            if share is None:
                yield wv_index, result
                continue
            shares.setdefault(wv_index, []).append(result)
            if len(shares[wv_index]) == share[1]:
                done = shares.pop(wv_index)
                pieces = [piece for pieces, _, _ in done for piece in pieces]
                _, sci, center = done[0]
                yield wv_index, _collapse(pieces, sci, center, members_of[wv_index], np,
                                          threads=workers)


def methane_template(wvs: np.ndarray) -> np.ndarray:
    """pyKLIP's T-dwarf template at each frame's wavelength."""
    import pyklip
    from scipy import interpolate

    path = os.path.join(os.path.dirname(pyklip.__file__), "spectra", "t800g100nc.flx")
    table = np.loadtxt(path)[:160]
    return interpolate.interp1d(table[:, 1], table[:, 3], kind="cubic")(wvs)


def _template(spectrum, wvs) -> np.ndarray | None:
    """The spectral template ``spectrum`` names, at each frame's wavelength (None for none)."""
    if spectrum is None:
        return None
    if isinstance(spectrum, str) and spectrum.lower() == "methane":
        return methane_template(wvs)
    if isinstance(spectrum, np.ndarray) and spectrum.size == np.size(wvs):
        return spectrum
    raise ValueError(f"{spectrum!r} is not a spectral template (only 'methane' or an array)")


def klip_dataset(dataset, mode: str = "ADI+SDI", outputdir: str = ".", fileprefix: str = "",
                 annuli: int = 5, subsections: int = 4, movement: float = 3, numbasis=None,
                 numthreads: int | None = None, calibrate_flux: bool = False,
                 annuli_spacing: str = "constant", maxnumbasis: int | None = None,
                 corr_smooth: float = 1, spectrum=None, highpass=False,
                 array: str | None = None) -> None:
    """pyKLIP's ``klip_dataset`` (KLIP algorithm, mean collapses) with the fast engine.

    Writes ``<prefix>-KLmodes-all.fits`` and, with more than one wavelength,
    ``<prefix>-KL<k>-speccube.fits``, like pyKLIP. ``array`` picks numpy or cupy (default: the
    ``compute.array`` switch).
    """
    from cruncher.psfsub.fast import output

    xp = array_module(array)
    numbasis = np.atleast_1d(np.asarray(numbasis if numbasis is not None else [1, 10, 20, 30, 50]))
    if numbasis.dtype.kind not in "iu":
        raise TypeError(f"numbasis should be integers, not {numbasis.dtype}")
    threads = max(1, int(numthreads or os.cpu_count() or 1))
    start = time.perf_counter()
    template = _template(spectrum, dataset.wvs)
    with ThreadPoolExecutor(1) as background:
        if xp is np:
            # loaded meanwhile; run_all's own warm_up then finds them loaded (or raises)
            background.submit(warm_up)
        images, nanmask = np.asarray(dataset.input, np.float32), None
        if highpass is not False:
            # in place: the frames are replaced by the high-passed ones, as pyKLIP replaces them
            images, nanmask = prepare.high_pass(images, highpass, threads, overwrite=True)
        # the workers need only the spline coefficients: the frames are parked on disk meanwhile
        parked = background.submit(prepare.park, images, outputdir)
        coeffs, nanmask = prepare.coefficients(images, threads, nanmask)
        shape = images.shape
        dataset.input = images = parked.result()
    wvs32 = np.asarray(dataset.wvs, np.float32)
    task = Task(coeffs=coeffs, nanmask=nanmask, centers=np.asarray(dataset.centers, float),
                frames=Frames(np.asarray(dataset.PAs, np.float32), wvs32,
                              np.asarray(dataset.filenums, np.float32)),
                settings=Settings(mode=mode, numbasis=numbasis,
                                  maxnumbasis=int(maxnumbasis or numbasis.max()),
                                  minmove=float(movement), corr_smooth=float(corr_smooth),
                                  spectrum=template),
                iwa=float(dataset.IWA), owa=getattr(dataset, "OWA", None), annuli=annuli,
                subsections=subsections, spacing=annuli_spacing,
                flipx=bool(getattr(dataset, "flipx", False)),
                out_center=(int(shape[2] // 2), int(shape[1] // 2)))
    unique = np.unique(wvs32)
    everything = np.arange(shape[0])
    groups = [(everything if "SDI" in mode.upper() else np.flatnonzero(wvs32 == wv), i, wv)
              for i, wv in enumerate(unique)]
    workers = min(threads, len(groups))
    _log.info("fast KLIP: %d frames high-passed and prepared in %.1f s; %d wavelengths on %d "
              "worker(s)", shape[0], time.perf_counter() - start, len(groups), workers)
    sums = output.Sums(len(numbasis), len(unique), shape[1:], max_count=shape[0])
    done = 0
    for wv_index, (total, count) in run_all(task, groups, workers, xp):
        sums.add(wv_index, total, count)
        done += 1
        _log.info("fast KLIP: wavelength %d/%d done", done, len(unique))
    del coeffs, nanmask, task
    start = time.perf_counter()
    output.write(dataset, sums, numbasis=numbasis, template=template, mode=mode,
                 annuli=annuli, subsections=subsections, movement=movement,
                 maxnumbasis=maxnumbasis, calibrate_flux=calibrate_flux, spectrum=spectrum,
                 highpass=highpass, outputdir=outputdir, fileprefix=fileprefix)
    _log.info("fast KLIP: products written in %.1f s", time.perf_counter() - start)
