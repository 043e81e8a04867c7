"""Where the fast KLIP engine's time goes, step by step, and its compiled loops against the code
they replace.

    python bench/bench_klip_steps.py [--cubes 40] [--wavelength 18] [--runs 3]

Builds the engine's task for the general reduction of ``--cubes`` cubes of the standard dataset
(``bench_psfsub.py``'s: 37 x 281 x 281, high-pass, spline coefficients), then, in this one process
with BLAS on one thread (as in each of the engine's workers):

- one wavelength's KLIP (``--runs`` times; the first run, which pays for first-touch page faults,
  is not counted): its wall time and the seconds spent in each step;
- on that wavelength's data, median of ``--runs``: the largest eigenpairs of the tridiagonal
  matrices (compiled bisection and inverse iteration against LAPACK's ``sterf`` + ``stein``), the
  ranking's smoothing (compiled against scipy's ``gaussian_filter``) and aligning and scaling
  (compiled against the banded products).

Results go to ``bench/results/<date>-klip-steps.json``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402

from bench_psfsub import make_dataset, spread  # noqa: E402
from common import save  # noqa: E402

#: The steps timed inside one wavelength: (name, module path, attribute).
STEPS = (("align and scale", "cruncher.psfsub.fast.resample", "align_and_scale"),
         ("smoothing for the ranking", "cruncher.psfsub.fast.smoothing", "Smoother.section"),
         ("correlations for the ranking", "cruncher.psfsub.fast.core", "_correlations"),
         ("tridiagonal reduction (LAPACK sytrd)", "scipy.linalg.lapack", "dsytrd"),
         ("tridiagonal eigenpairs", "cruncher.psfsub.fast.weights", "top_tridiagonal_pairs"),
         ("weights carried to and from the basis (ormqr)", "cruncher.psfsub.fast.weights",
          "_apply_q"),
         ("derotation", "cruncher.psfsub.fast.derotation", "rotate"),
         ("KLIP of the sections", "cruncher.psfsub.fast.engine", "klip_section"))


def build_task(cubes: int):
    """The engine's task (and its wavelengths) as ``klip_dataset`` builds it for the general
    reduction."""
    from pyklip.instruments.GPI import GPIData

    from cruncher.psfsub.fast import engine, prepare
    from cruncher.psfsub.fast.core import Frames, Settings
    from cruncher.psfsub.klip import reduction_params

    params = reduction_params("klip_general")
    dataset = GPIData(spread(make_dataset(Path(__file__).parent / "work" / "psfsub"), cubes),
                      highpass=False, quiet=True)
    images, nan = prepare.high_pass(np.asarray(dataset.input, np.float32), params["highpass"], 2,
                                    overwrite=True)
    coeffs, nanmask = prepare.coefficients(images, 2, nan)
    wvs = np.asarray(dataset.wvs, np.float32)
    numbasis = np.asarray(params["numbasis"])
    task = engine.Task(
        coeffs=coeffs, nanmask=nanmask, centers=np.asarray(dataset.centers, float),
        frames=Frames(np.asarray(dataset.PAs, np.float32), wvs,
                      np.asarray(dataset.filenums, np.float32)),
        settings=Settings(mode=params["mode"], numbasis=numbasis,
                          maxnumbasis=params["maxnumbasis"], minmove=params["movement"]),
        iwa=float(dataset.IWA), owa=getattr(dataset, "OWA", None), annuli=params["annuli"],
        subsections=params["subsections"], spacing=params["annuli_spacing"],
        flipx=bool(getattr(dataset, "flipx", False)),
        out_center=(images.shape[2] // 2, images.shape[1] // 2))
    return task, np.unique(wvs)


class StepTimer:
    """Wraps each step's function so that its calls add up their seconds."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._undo: list = []

    def __enter__(self):
        import importlib

        for name, module, attribute in STEPS:
            owner = importlib.import_module(module)
            *path, last = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            original = getattr(owner, last)
            setattr(owner, last, self._timed(name, original))
            self._undo.append((owner, last, original))
        return self

    def _timed(self, name, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
        return timed

    def __exit__(self, *exc):
        for owner, last, original in reversed(self._undo):
            setattr(owner, last, original)


def one_wavelength(task, unique, wavelength: int, runs: int) -> dict:
    """Wall time of one wavelength and the seconds of each step, medians of ``runs``."""
    from cruncher.psfsub.fast import engine

    members = np.arange(len(task.coeffs))
    walls, steps = [], defaultdict(list)
    for run in range(runs + 1):
        with StepTimer() as timer:
            start = time.perf_counter()
            engine.klip_wavelength(members, wavelength, unique[wavelength])
            wall = time.perf_counter() - start
        if run == 0:
            continue
        walls.append(wall)
        for name, seconds in timer.seconds.items():
            steps[name].append(seconds)
        print(f"wavelength {wavelength}: {wall:.2f} s", flush=True)
    # the covariances and projections are the rest of the sections' KLIP
    inside = [name for name, module, _ in STEPS[2:6]]
    steps["covariances, reference selection, projections"] = [
        total - sum(steps[name][i] for name in inside)
        for i, total in enumerate(steps.pop("KLIP of the sections"))]
    return {"wall_s": _median(walls),
            "steps_s": {name: _median(values) for name, values in steps.items()}}


def compiled_against_replaced(task, unique, wavelength: int, runs: int) -> dict:
    """Each compiled loop and the code it replaces, on this wavelength's data: medians."""
    from scipy.linalg import lapack

    from cruncher.psfsub.fast import engine, gaussian, resample, tridiagonal, weights
    from cruncher.psfsub.fast.sections import sections
    from cruncher.psfsub.fast.smoothing import Smoother

    members = np.arange(len(task.coeffs))
    center = task.centers.mean(axis=0)
    out: dict = {}
    out["align and scale every frame (s)"] = _versus(
        lambda: engine._aligned(members, unique[wavelength], center, np), resample, runs)
    aligned = engine._aligned(members, unique[wavelength], center, np)
    first = np.where(task.nanmask[0], np.nan, 0.0)
    parts = sections(aligned.shape[1:], center, task.iwa, task.owa, task.annuli,
                     task.subsections, task.spacing, first, task.centers[0])

    def smooth_all():
        smoother = Smoother(aligned, parts)
        for index in smoother.order():
            smoother.section(index)

    out["smoothing for the ranking, every section (s)"] = _versus(smooth_all, gaussian, runs)
    # tridiagonal matrices of this wavelength's covariances (every 4th science frame's)
    from cruncher.psfsub.fast import core

    tridiagonals = []
    original = weights.top_tridiagonal_pairs

    def record(diag, off, k):
        tridiagonals.append((diag.copy(), off.copy(), k))
        return original(diag, off, k)

    weights.top_tridiagonal_pairs = record
    try:
        somewhere = core.finite_somewhere(aligned)
        frames = core.Frames(task.frames.parangs, task.frames.wvs, task.frames.filenums)
        sci = np.flatnonzero(task.frames.wvs == unique[wavelength])[::4]
        smoother = Smoother(aligned, parts)
        for index in smoother.order():
            core.klip_section(aligned, sci, parts[index], frames, task.settings, wavelength, np,
                              somewhere, smoother.section(index))
    finally:
        weights.top_tridiagonal_pairs = original
    matrices = len(tridiagonals)

    def eigenpairs(function):
        return lambda: [function(d, e, k) for d, e, k in tridiagonals]

    compiled = _repeat(eigenpairs(tridiagonal.top_pairs), runs)
    lapack_pairs = _repeat(eigenpairs(weights.lapack_tridiagonal_pairs), runs)
    n, k = tridiagonals[0][0].size, tridiagonals[0][2]
    out["largest eigenpairs of a tridiagonal matrix (ms each)"] = {
        "compiled": 1e3 * compiled / matrices, "replaced": 1e3 * lapack_pairs / matrices,
        "ratio": lapack_pairs / compiled, "matrices": matrices, "size": n, "pairs": k}
    covariance = np.cov(np.random.default_rng(0).standard_normal((n, 2 * n)))
    workspace = int(lapack.dsytrd_lwork(n, lower=1)[0])
    sytrd = _repeat(lambda: [lapack.dsytrd(np.array(covariance, order="F"), lower=1,
                                           lwork=workspace) for _ in range(100)], runs)
    out["LAPACK sytrd of a covariance of that size, for scale (ms)"] = 1e3 * sytrd / 100
    return out


def _versus(work, module, runs: int) -> dict:
    """Seconds of ``work`` with ``module``'s compiled loop and without it (``available``)."""
    compiled = _repeat(work, runs)
    saved = module.available
    module.available = lambda: False
    try:
        replaced = _repeat(work, runs)
    finally:
        module.available = saved
    return {"compiled": compiled, "replaced": replaced, "ratio": replaced / compiled}


def _repeat(work, runs: int) -> float:
    work()      # warm: compiled code loaded, caches filled
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return _median(times)


def _median(values) -> float:
    return round(statistics.median(values), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cubes", type=int, default=40)
    parser.add_argument("--wavelength", type=int, default=18, help="index of the wavelength")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from cruncher.psfsub.fast import derotation, engine, gather, gaussian, heap, resample, tridiagonal

    task, unique = build_task(args.cubes)
    for module in (resample, derotation, gaussian, tridiagonal, gather):
        module.warm_up()
    heap.keep_freed_memory()        # as in the engine's workers
    engine._TASK = task
    payload = {"cubes": args.cubes, "wavelength_index": args.wavelength,
               "frames": int(len(task.coeffs)),
               "one_wavelength": one_wavelength(task, unique, args.wavelength, args.runs),
               "compiled_against_replaced": compiled_against_replaced(task, unique,
                                                                      args.wavelength, args.runs)}
    print(payload)
    print(save("klip-steps", payload))


if __name__ == "__main__":
    main()
