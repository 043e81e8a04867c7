"""Simulated spectral datacubes, straight from the scene (no raw frames, no DRP run).

For work that starts from cubes (PSF subtraction, contrast, reprocessing from cubes) a sequence
of ``_spdc`` cubes is made directly: the same scene, sky and timing as :mod:`night`, integrated
over each of the 37 channels, with photon and read noise, and with the headers the DRP writes
(its own satellite-spot measurement included, so downstream code sees what it would see from real
reductions). Several times faster than simulating raw frames and reducing them.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cruncher.drp import spots as spot_tools
from cruncher.drp.contrast import at_separations, single_frame
from cruncher.drp.products import spectral_cube_hdus, write_atomic
from cruncher.instruments.gpi import optics
from cruncher.instruments.gpi.frames import raw_headers
from cruncher.instruments.gpi.sim import detector as det
from cruncher.instruments.gpi.sim import night
from cruncher.instruments.gpi.sim.geometry import master_wavecal
from cruncher.instruments.gpi.sim.scene import FrameScene, fine_grid

#: Detector pixels summed per channel (3 columns, about half a row): for the read noise.
PIXELS_PER_CHANNEL = 1.5


def simulate_cubes(plan: night.NightPlan, *, channels: int | None = None,
                   crop: int | None = None) -> dict:
    """Write the science cubes of ``plan`` under ``<out>/cubes/<YYMMDD>/`` and return the truth.

    ``channels`` bins the 37 channels down (for fast tests); ``crop`` cuts a square of that many
    pixels about the star. Spots and single-frame contrast are measured on the full cube first,
    and their header values moved to the smaller one.
    """
    start = time.perf_counter()
    rng = np.random.default_rng(plan.seed)
    shots = [s for s in night._schedule(plan, rng) if s.kind == "science"]
    directory = plan.out / "cubes" / f"{shots[0].info.start:%y%m%d}"
    directory.mkdir(parents=True, exist_ok=True)
    with cf.ProcessPoolExecutor(max_workers=max(1, plan.workers)) as pool:
        written = list(pool.map(_make_cube, [(plan, shot, directory, channels, crop)
                                             for shot in shots], chunksize=2))
    truth = {
        "seed": plan.seed, "noise": plan.noise, "date": plan.date,
        "sequences": [dict(target=s.target, band=s.band, frames=s.frames,
                           coordinates=list(s.coordinates),
                           planets=[asdict(p) for p in s.planets]) for s in plan.sequences],
        "frames": {path.name: _offset_truth(night._truth_of(plan, shot), path)
                   for path, shot in zip(written, shots)},
        "seconds": round(time.perf_counter() - start, 2),
    }
    (plan.out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def _make_cube(job) -> Path:
    plan, shot, directory, channels, crop = job
    info = shot.info
    seq = plan.sequences[shot.sequence]
    rng = np.random.default_rng([plan.seed, info.number, 7])
    key = ("cube-geometry", info.band, plan.model)
    if key not in night._CACHE:
        wavecal = master_wavecal(info.band, plan.model)
        edges = fine_grid(info.band)
        lsf = det.lsf_matrix(edges, plan.model.lsf_sigma_y * float(np.nanmean(wavecal.dispersion)))
        night._CACHE[key] = (*wavecal.lenslets(), edges, lsf)
    iy, ix, edges, lsf = night._CACHE[key]
    scene = night._scene(plan, shot.sequence)
    frame = FrameScene(star_centre=shot.centre, pyklip_angle_deg=shot.pyklip_angle,
                       minutes=shot.minutes, star_electrons=seq.star_electrons)
    masses = (scene.lenslet_spectra(frame, ix.astype(np.float64), iy.astype(np.float64))
              * scene.width[None, :]) @ lsf
    electrons = det.channel_masses(masses, edges, optics.channel_edges(info.band))
    if plan.noise:
        variance = np.clip(electrons, 0, None) + PIXELS_PER_CHANNEL * 6.0 ** 2
        electrons = electrons + np.sqrt(variance) * rng.standard_normal(electrons.shape)
    cube = np.full((electrons.shape[1], optics.CUBE_SIZE, optics.CUBE_SIZE), np.nan, np.float32)
    cube[:, iy, ix] = (electrons / det.GAIN_E_PER_ADU).T
    wavelengths = optics.channel_centres(info.band)
    found = spot_tools.find_spots(cube, wavelengths)
    filtered = spot_tools.highpass(cube)
    fluxes = spot_tools.peak_fluxes(filtered, found.positions, wavelengths)
    seps, curve = single_frame(filtered, found.centre, found.positions, fluxes, info.band)
    single = at_separations(seps, curve, optics.FIDUCIAL_SEPARATIONS)
    cube, wavelengths, found, fluxes, offset = _shrink(cube, wavelengths, found, fluxes,
                                                       channels, crop)
    updates = spot_tools.header_updates(found, fluxes)
    updates["AVPARANG"] = (round(shot.avparang, 5), "exposure-averaged parallactic angle (deg)")
    updates["SIMULATD"] = (True, "simulated directly as a cube by cruncher")
    updates["CUBEOFFX"] = (offset[0], "x of this cube's pixel 0 in the full cube")
    updates["CUBEOFFY"] = (offset[1], "y of this cube's pixel 0 in the full cube")
    for sep, value in zip(optics.FIDUCIAL_SEPARATIONS, single):
        updates[f"CONTR{int(round(sep * 100)):03d}"] = (value if value is not None else "n/a",
                                                       f"single-frame 5-sigma contrast at {sep}\"")
    primary, ext = raw_headers(info)
    dq = np.where(np.isfinite(cube), 0, 1).astype(np.uint8)
    hdus = spectral_cube_hdus(primary, ext, cube, dq, wavelengths, source=info.filename,
                              centre=found.centre, avparang=shot.avparang, ext_updates=updates,
                              history=["simulated cube (cruncher simulate cubes)"])
    path = directory / f"{info.filename[:-5]}_spdc.fits"
    write_atomic(hdus, path)
    return path


def _shrink(cube, wavelengths, found, fluxes, channels: int | None, crop: int | None):
    """Bin channels and crop about the star; spot positions and fluxes follow."""
    positions, centres, ok = found.positions, found.centres, found.found
    if channels and channels < cube.shape[0]:
        group = cube.shape[0] // channels
        keep = channels * group

        def binned(a, axis=0):
            shape = a.shape[:axis] + (channels, group) + a.shape[axis + 1:]
            return a[:keep].reshape(shape).mean(axis=axis + 1)

        cube = binned(cube.astype(np.float64)).astype(np.float32)
        wavelengths, positions, centres, fluxes = (binned(wavelengths), binned(positions),
                                                   binned(centres), binned(fluxes))
        ok = ok[:keep].reshape(channels, group, -1).all(axis=1)
    offset = (0, 0)
    if crop and crop < cube.shape[1]:
        cx, cy = (int(round(v)) for v in centres.mean(axis=0))
        x0, y0 = cx - crop // 2, cy - crop // 2
        cube = cube[:, y0:y0 + crop, x0:x0 + crop]
        shift = np.array([x0, y0], dtype=np.float64)
        positions, centres, offset = positions - shift, centres - shift, (x0, y0)
    found = spot_tools.Spots(positions=positions, found=ok, centres=centres,
                             residual_rms=found.residual_rms)
    return cube, wavelengths, found, fluxes, offset


def _offset_truth(truth: dict, path: Path) -> dict:
    """Truth positions in the (possibly cropped) cube's own pixels."""
    from astropy.io import fits

    sci = fits.getheader(path, 1)
    dx, dy = sci.get("CUBEOFFX", 0), sci.get("CUBEOFFY", 0)
    if "star_centre" in truth:
        truth["star_centre"] = [truth["star_centre"][0] - dx, truth["star_centre"][1] - dy]
        truth["planets"] = [dict(p, x=p["x"] - dx, y=p["y"] - dy) for p in truth["planets"]]
    return truth
