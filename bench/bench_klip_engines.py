"""The general KLIP reduction with the fast engine and with pyKLIP, side by side.

    python bench/bench_klip_engines.py [--cubes 10 20 40] [--runs 3] [--pyklip-runs 3] [--with-lite]

Same standard dataset and job as ``bench_psfsub.py`` (40 simulated H-band cubes of 37 x 281 x
281; subsets spread over the sequence; each job a ``python -m cruncher.psfsub`` process with BLAS
pinned to one thread and two workers). For each size: wall time and peak memory (PSS of the
process tree) of every run, their medians, and the ratio pyKLIP / fast. pyKLIP runs are long
(minutes to most of an hour each): ``--pyklip-runs`` may be smaller than ``--runs``, and the
results file says how many runs each median is of. Results go to
``bench/results/<date>-klip-engines.json`` after every run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_psfsub import make_dataset, run_job, spread  # noqa: E402
from common import save  # noqa: E402


def flop_estimate(cubes: int, wavelengths: int = 37, size: int = 281, refs: int = 300,
                  cutoffs: int = 5) -> dict:
    """Floating-point operations of one general reduction (ADI+SDI, 9 log annuli x 4 sections),
    counted as the fast engine does the work.

    ``algorithm``: the covariance of all frames per section and wavelength (a symmetric product,
    ``frames^2 x pixels``), the science frames' correlations, per science frame and section the
    300 x 300 tridiagonal reduction (``4/3 n^3``) and the model's weights carried to and from its
    basis (``2 n^2`` per column, one column per cutoff and one for the science frame; the
    tridiagonal eigenproblem itself is ``O(n^2)``), and the projections; ``resampling``: what the
    engine also spends aligning every frame to every wavelength (a multiply and an add for each of
    four spline taps along x, then along y, per output pixel).
    """
    from cruncher.psfsub.fast.sections import sections

    frames = cubes * wavelengths
    pixels = sum(s.pixels.size for s in sections((size, size), (size // 2, size // 2), 9.06,
                                                  size / 2 - 6, 9, 4, "log"))
    covariance = wavelengths * frames ** 2 * pixels
    correlation = wavelengths * cubes * frames * pixels * 2
    eigen = wavelengths * 36 * cubes * (4 / 3 * refs ** 3 + 2 * refs ** 2 * (cutoffs + 1))
    projection = wavelengths * cubes * cutoffs * frames * pixels * 2
    return {"pixels_per_wavelength": pixels, "covariance": covariance, "correlation": correlation,
            "eigen": eigen, "projection": projection,
            "algorithm": covariance + correlation + eigen + projection,
            "resampling": frames * wavelengths * 16 * size ** 2}


def field_radius(inputs: list[str]) -> float:
    """Radius (pixels) about the star inside which every frame has data after being scaled to any
    wavelength: the largest circle inside every cube's data, shrunk by shortest / longest
    wavelength. Beyond it (the image corners) some references are zero-filled, the reference
    covariances become nearly singular at high KL modes, and pyKLIP's own lite and full modes
    disagree with each other by more than the tolerance."""
    import numpy as np

    from cruncher.psfsub.dataset import load

    light = load(inputs)
    inner = np.inf
    for cube, centres in zip(light.cubes, light.centers):
        for image, (cx, cy) in zip(cube, centres):
            y, x = np.nonzero(~np.isfinite(image))
            ny, nx = image.shape
            edges = [cx, nx - 1 - cx, cy, ny - 1 - cy]
            inner = min(inner, *edges, *(np.hypot(x - cx, y - cy) if x.size else []))
    return float(inner * light.wavelengths.min() / light.wavelengths.max())


def agreement(fast: str, reference: str, field: float | None = None) -> dict:
    """Per KL cutoff: difference RMS / reference residual RMS over all pixels valid in both (the
    acceptance measure) and, given ``field``, within that radius; NaN masks equal; and the SNR of
    the dataset's planet (0.4", PA 60 deg) at KL 20 in both."""
    import numpy as np
    from astropy.io import fits

    from cruncher.instruments.gpi.optics import LENSLET_SCALE
    from cruncher.psfsub import klip, snr

    ours, theirs = fits.getdata(fast), fits.getdata(reference)
    out: dict = {"relative_rms": [], "nan_masks_equal": []}
    y, x = np.indices(ours.shape[1:])
    _, centre, _ = klip.kl_image(reference, klip.DEFAULT_KL)
    inside = np.hypot(x - centre[0], y - centre[1]) <= (field if field is not None else np.inf)
    if field is not None:
        out.update(field_radius_px=round(field, 1), relative_rms_field=[])
    for a, b in zip(ours, theirs):
        valid = np.isfinite(a) & np.isfinite(b)
        out["relative_rms"].append(_relative_rms(a, b, valid))
        if field is not None:
            out["relative_rms_field"].append(_relative_rms(a, b, valid & inside))
        out["nan_masks_equal"].append(bool(np.array_equal(np.isnan(a), np.isnan(b))))
    for name, path in (("snr_fast", fast), ("snr_pyklip", reference)):
        image, centre, _ = klip.kl_image(path, klip.DEFAULT_KL)
        sep = 0.4 / LENSLET_SCALE
        x = int(round(centre[0] - sep * np.sin(np.radians(60.0))))
        y = int(round(centre[1] + sep * np.cos(np.radians(60.0))))
        out[name] = float(np.nanmax(snr.snr_map(image, centre)[y - 1:y + 2, x - 1:x + 2]))
    return out


def _relative_rms(a, b, where) -> float:
    import numpy as np

    return float(np.sqrt(np.mean((a - b)[where] ** 2) / np.mean(b[where] ** 2)))


def lite_agreements(work: Path, inputs: list[str], fast: str, full: str) -> dict:
    """One pyKLIP run in ``lite`` mode, and how it, pyKLIP's full mode (``full``) and the fast
    engine (``fast``) agree pairwise: whether a miss of the tolerance is the fast engine's or is
    there between pyKLIP's own two modes as well."""
    run = run_job(work, "klip_general", inputs, {"engine": "pyklip", "lite": True})
    print(f"{len(inputs)} cubes, pyKLIP lite: {run['wall_s']:.1f} s, {run['peak_gb']:.2f} GB",
          flush=True)
    field = field_radius(inputs)
    found = {"pyklip_lite": summary([run]),
             "agreement_fast_vs_pyklip_lite": agreement(fast, run["kl_cube"], field),
             "agreement_pyklip_lite_vs_full": agreement(run["kl_cube"], full, field)}
    for key in ("agreement_fast_vs_pyklip_lite", "agreement_pyklip_lite_vs_full"):
        print(f"{len(inputs)} cubes: {key} {found[key]}", flush=True)
    return found


def summary(runs: list[dict]) -> dict:
    if not runs:
        return {"runs": 0}
    return {"runs": len(runs), "median_wall_s": round(statistics.median(r["wall_s"] for r in runs), 1),
            "median_peak_gb": round(statistics.median(r["peak_gb"] for r in runs), 2),
            "all": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cubes", type=int, nargs="*", default=[10, 20, 40])
    parser.add_argument("--runs", type=int, default=3, help="fast-engine runs per size")
    parser.add_argument("--pyklip-runs", type=int, default=3, help="pyKLIP runs per size")
    parser.add_argument("--compare", nargs=3, metavar=("CUBES", "FAST", "PYKLIP"),
                        help="only compare two existing KL-mode cubes (fast, pyKLIP) of CUBES "
                             "cubes and add the agreement to the --append results file")
    parser.add_argument("--label", default=None,
                        help="with --compare: store as agreement_<label> (e.g. pyklip-lite-vs-full)")
    parser.add_argument("--append", type=Path, default=None,
                        help="results file of an earlier run to add these sizes to")
    parser.add_argument("--keep-pyklip-runs", action="store_true",
                        help="with --append: count that file's pyKLIP runs in the medians too "
                             "(pyKLIP's code does not change between invocations)")
    parser.add_argument("--with-lite", action="store_true",
                        help="also one pyKLIP run in its lite mode per size (where pyKLIP would "
                             "run full), and the agreement of each pair of the three products")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "work" / "psfsub")
    args = parser.parse_args()
    payload: dict = {"reduction": "klip_general", "sizes": {}}
    if args.append and args.append.exists():      # add to an earlier invocation's sizes
        payload["sizes"] = json.loads(args.append.read_text()).get("sizes", {})
    cubes = make_dataset(args.workdir)
    if args.compare:
        n, fast, reference = args.compare
        found = agreement(fast, reference, field_radius(spread(cubes, int(n))))
        key = f"agreement_{args.label}" if args.label else "agreement"
        payload["sizes"].setdefault(n, {})[key] = found
        print(n, "cubes:", found, "\n", save("klip-engines", payload))
        return
    for n in args.cubes:
        inputs = spread(cubes, n)
        entry = payload["sizes"].setdefault(str(n), {})
        for engine, runs in (("fast", args.runs), ("pyklip", args.pyklip_runs)):
            earlier = entry.get(engine, {}).get("all", [])
            measured = list(earlier) if engine == "pyklip" and args.keep_pyklip_runs else []
            for i in range(len(measured), len(measured) + runs):
                measured.append(run_job(args.workdir, "klip_general", inputs, {"engine": engine}))
                print(f"{n} cubes, {engine} run {i + 1}: {measured[-1]['wall_s']:.1f} s, "
                      f"{measured[-1]['peak_gb']:.2f} GB", flush=True)
                entry[engine] = summary(measured)
                save("klip-engines", payload)
        fast, ref = entry.get("fast", {}), entry.get("pyklip", {})
        if fast.get("runs") and ref.get("runs"):
            entry["speedup"] = round(ref["median_wall_s"] / fast["median_wall_s"], 2)
            entry["memory_ratio"] = round(ref["median_peak_gb"] / fast["median_peak_gb"], 2)
        entry["flops"] = flop_estimate(n)
        products = [e["all"][-1].get("kl_cube") for e in (fast, ref) if e.get("runs")]
        if len(products) == 2 and all(p and Path(p).exists() for p in products):
            entry["agreement"] = agreement(fast["all"][-1]["kl_cube"], ref["all"][-1]["kl_cube"],
                                           field_radius(inputs))
            print(f"{n} cubes: agreement {entry['agreement']}", flush=True)
        if args.with_lite and len(products) == 2:
            entry.update(lite_agreements(args.workdir, inputs, *products))
        print(save("klip-engines", payload), flush=True)


if __name__ == "__main__":
    main()
