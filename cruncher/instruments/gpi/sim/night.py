"""A simulated observing night: darks, an arc snapshot, coronagraphic spectral sequences.

``simulate_night`` writes, under ``<out>/raw/<YYMMDD>/``, raw frames named and stamped as GPI
writes them, in time order: darks at the science and at the arc exposure time, then for each
sequence an Ar arc snapshot and the science frames, centred on the target's meridian transit for
field rotation. It also writes what an observatory would have (the master wavecal of each band
and the bad-pixel map, under ``<out>/calibrations/``) and the truth (``<out>/truth.json``: per
frame the star centre, the flexure shift, the exposure-averaged parallactic angle and the planets'
positions; optionally noiseless truth cubes under ``<out>/truth/``).
"""
from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.time import Time

from cruncher.instruments.gpi import optics
from cruncher.instruments.gpi.frames import ITIME_UNIT_S, FrameInfo, raw_headers
from cruncher.instruments.gpi.lamps import lines_in_band
from cruncher.instruments.gpi.sim import detector as det
from cruncher.instruments.gpi.sim import sky
from cruncher.instruments.gpi.sim.geometry import IfsModel, master_wavecal
from cruncher.instruments.gpi.sim.scene import (FrameScene, Planet, SceneModel, SpeckleField,
                                                fine_grid)

_log = logging.getLogger(__name__)

#: Real-looking young stars (RA, Dec in degrees, J2000).
CATALOGUE = {
    "HD 95086": (164.6119, -68.6668),
    "HR 2562": (102.5042, -60.2492),
    "beta Pic": (86.8212, -51.0665),
    "51 Eri": (69.4005, -2.4735),
    "HD 206893": (325.7521, -12.7886),
    "AU Mic": (311.2897, -31.3409),
    "HR 4796A": (189.0042, -39.8696),
    "TWA 7": (160.6254, -33.6711),
    "TW Hya": (165.4659, -34.7047),
}
SCIENCE_ITIME = 41 * ITIME_UNIT_S
ARC_ITIME = 20 * ITIME_UNIT_S
OVERHEAD_S = 20.0


@dataclass(frozen=True, kw_only=True)
class SequencePlan:
    """One coronagraphic spectral sequence on a star."""

    target: str = "HD 95086"
    frames: int = 40
    band: str = "H"
    planets: tuple[Planet, ...] = ()
    star_electrons: float = 1e10
    arc: bool = True

    @property
    def coordinates(self) -> tuple[float, float]:
        if self.target in CATALOGUE:
            return CATALOGUE[self.target]
        digest = hashlib.sha1(self.target.encode()).digest()
        return digest[0] / 255 * 360.0, -70.0 + digest[1] / 255 * 60.0


@dataclass(frozen=True, kw_only=True)
class NightPlan:
    out: Path
    sequences: tuple[SequencePlan, ...] = (SequencePlan(),)
    date: str = "2016-03-15"
    seed: int = 0
    darks: int = 5
    arc_darks: int = 3
    noise: bool = True
    truth_cubes: bool = False
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    model: IfsModel = IfsModel()


@dataclass(frozen=True, kw_only=True)
class _Shot:
    """One frame to make: what it shows and its header facts."""

    info: FrameInfo
    kind: str                 # dark, arc, science
    sequence: int = -1
    centre: tuple[float, float] = (140.0, 140.0)
    pyklip_angle: float = 0.0
    avparang: float = 0.0
    minutes: float = 0.0


def simulate_night(plan: NightPlan) -> dict:
    """Write the night and return its truth (also saved as ``truth.json``)."""
    start = time.perf_counter()
    rng = np.random.default_rng(plan.seed)
    flexure = (round(float(rng.uniform(-0.9, 0.9)), 4), round(float(rng.uniform(-0.9, 0.9)), 4))
    shots = _schedule(plan, rng)
    night_dir = plan.out / "raw" / f"{shots[0].info.start:%y%m%d}"
    night_dir.mkdir(parents=True, exist_ok=True)
    _write_calibrations(plan, shots[0].info.start)
    jobs = [(plan, shot, flexure, night_dir) for shot in shots]
    with cf.ProcessPoolExecutor(max_workers=max(1, plan.workers)) as pool:
        written = list(pool.map(_make_frame, jobs, chunksize=4))
    truth = {
        "seed": plan.seed, "flexure": list(flexure), "read_noise_e": _detector(plan).read_noise_e,
        "gain": det.GAIN_E_PER_ADU, "noise": plan.noise, "date": plan.date,
        "sequences": [dict(target=s.target, band=s.band, frames=s.frames,
                           coordinates=list(s.coordinates),
                           planets=[asdict(p) for p in s.planets]) for s in plan.sequences],
        "frames": {path.name: _truth_of(plan, shot) for path, shot in zip(written, shots)},
        "seconds": round(time.perf_counter() - start, 2),
    }
    (plan.out / "truth.json").write_text(json.dumps(truth, indent=1))
    _log.info("simulated %d frames in %.1f s under %s", len(shots), truth["seconds"], plan.out)
    return truth


def _truth_of(plan: NightPlan, shot: _Shot) -> dict:
    out = {"kind": shot.kind, "object": shot.info.object, "mjd": Time(shot.info.start).mjd,
           "itime": shot.info.itime, "sequence": shot.sequence}
    if shot.kind == "science":
        seq = plan.sequences[shot.sequence]
        scene = _scene(plan, shot.sequence)
        frame = FrameScene(star_centre=shot.centre, pyklip_angle_deg=shot.pyklip_angle,
                           minutes=shot.minutes, star_electrons=seq.star_electrons)
        out.update(star_centre=list(shot.centre), avparang=shot.avparang,
                   pyklip_angle=shot.pyklip_angle,
                   planets=[dict(asdict(p), x=x, y=y) for p, (x, y) in
                            zip(seq.planets, scene.planet_positions(frame))])
    return out


# --- scheduling ------------------------------------------------------------------------------


def _schedule(plan: NightPlan, rng: np.random.Generator) -> list[_Shot]:
    """Every frame of the night in time order, with its header facts and truth."""
    first = plan.sequences[0]
    cadence = SCIENCE_ITIME + OVERHEAD_S
    transit = sky.transit_time(first.coordinates[0], Time(f"{plan.date}T06:00:00"))
    clock = (transit - first.frames * cadence / 2 * u.s).to_datetime()
    clock -= dt.timedelta(seconds=(plan.darks + plan.arc_darks) * cadence + 600)
    clock = clock.replace(microsecond=0)
    shots: list[_Shot] = []

    def add(kind: str, itime: float, sequence: int = -1, **fields) -> None:
        nonlocal clock
        info = FrameInfo(start=clock, number=len(shots) + 1, itime=itime, **fields)
        shots.append(_Shot(info=info, kind=kind, sequence=sequence))
        clock = info.end + dt.timedelta(seconds=OVERHEAD_S)

    for itime, count in ((SCIENCE_ITIME, plan.darks), (ARC_ITIME, plan.arc_darks)):
        for _ in range(count):
            add("dark", itime, object="Dark", obstype="DARK", obsclass="dayCal", band=first.band,
                coronagraph=False)
    clock += dt.timedelta(seconds=300)
    for index, seq in enumerate(plan.sequences):
        ra, dec = seq.coordinates
        if seq.arc:
            add("arc", ARC_ITIME, index, object=seq.target, obstype="ARC", obsclass="acqCal",
                band=seq.band, gcallamp="Ar", ra_deg=ra, dec_deg=dec, observation=index + 1)
        for _ in range(seq.frames):
            add("science", SCIENCE_ITIME, index, object=seq.target, band=seq.band, ra_deg=ra,
                dec_deg=dec, observation=index + 1)
        clock += dt.timedelta(seconds=600)
    return _add_sky(plan, shots, rng)


def _add_sky(plan: NightPlan, shots: list[_Shot], rng: np.random.Generator) -> list[_Shot]:
    """Hour angle, parallactic angle, airmass; star centre jitter; time since sequence start."""
    out = []
    starts: dict[int, dt.datetime] = {}
    for shot in shots:
        info = shot.info
        seq = plan.sequences[shot.sequence] if shot.sequence >= 0 else plan.sequences[0]
        ra, dec = seq.coordinates
        begin = Time(info.start)
        samples = begin + np.linspace(0, info.itime * info.coadds, 31) * u.s
        angles = sky.parallactic_angles(ra, dec, samples)
        avparang = float(np.degrees(np.mean(np.unwrap(np.radians(angles)))))
        info = replace(info, ha_hours=float(sky.hour_angles(ra, Time([begin]))[0]),
                       par_ang=round(float(angles[0]), 4),
                       airmass=round(float(sky.airmass(ra, dec, Time([begin]))[0]), 4))
        starts.setdefault(shot.sequence, info.start)
        minutes = (info.start - starts[shot.sequence]).total_seconds() / 60.0
        centre = (float(140.0 + rng.normal(0, 0.4)), float(140.0 + rng.normal(0, 0.4)))
        out.append(replace(shot, info=info, avparang=avparang, centre=centre, minutes=minutes,
                           pyklip_angle=optics.pyklip_angle(avparang)))
    return out


# --- frames (run in worker processes) ----------------------------------------------------------

# Keyed on everything that makes the cached object: two plans that share a seed (as tests and
# demos do) but not their planets or model must not share a scene or a renderer.
_CACHE: dict = {}


def _scene(plan: NightPlan, sequence: int) -> SceneModel:
    seq = plan.sequences[sequence]
    key = ("scene", plan.seed, sequence, seq.band, seq.planets)
    if key not in _CACHE:
        speckles = SpeckleField(seq.band, seed=plan.seed * 100 + sequence)
        _CACHE[key] = SceneModel(band=seq.band, speckles=speckles, planets=seq.planets)
    return _CACHE[key]


def _renderer(plan: NightPlan, band: str, flexure: tuple[float, float]):
    key = ("renderer", band, flexure, plan.model)
    if key not in _CACHE:
        wavecal = master_wavecal(band, plan.model).shifted(*flexure)
        iy, ix = wavecal.lenslets()
        traces = det.Traces.from_wavecal(wavecal, iy, ix)
        edges = fine_grid(band)
        lsf = det.lsf_matrix(edges, plan.model.lsf_sigma_y * float(np.nanmean(wavecal.dispersion)))
        renderer = det.TraceRenderer(traces, edges, plan.model.psf_sigma_x)
        _CACHE[key] = (wavecal, iy, ix, edges, lsf, renderer)
    return _CACHE[key]


def _detector(plan: NightPlan) -> det.DetectorModel:
    key = ("detector", plan.seed)
    if key not in _CACHE:
        _CACHE[key] = det.DetectorModel.make(plan.seed)
    return _CACHE[key]


def _make_frame(job) -> Path:
    plan, shot, flexure, night_dir = job
    info = shot.info
    rng = np.random.default_rng([plan.seed, info.number])
    detector = _detector(plan)
    seconds = info.itime * info.coadds
    if shot.kind == "dark":
        electrons = np.zeros(detector.dark_current.shape)
    else:
        wavecal, iy, ix, edges, lsf, renderer = _renderer(plan, info.band, flexure)
        if shot.kind == "arc":
            masses = _arc_masses(info.band, edges, lsf, ix, iy, plan.model, wavecal) * seconds
        else:
            seq = plan.sequences[shot.sequence]
            scene = _scene(plan, shot.sequence)
            frame = FrameScene(star_centre=shot.centre, pyklip_angle_deg=shot.pyklip_angle,
                               minutes=shot.minutes, star_electrons=seq.star_electrons)
            density = scene.lenslet_spectra(frame, ix.astype(np.float64), iy.astype(np.float64))
            masses = (density * scene.width[None, :]) @ lsf
            if plan.truth_cubes:
                _write_truth_cube(plan, info, masses, edges, iy, ix, detector.gain)
        electrons = renderer(masses)
    data = detector.expose(electrons, seconds, rng, noise=plan.noise)
    primary, sci = raw_headers(info)
    dq = detector.bad.astype(np.uint8)
    hdus = fits.HDUList([fits.PrimaryHDU(header=primary),
                         fits.ImageHDU(data=data, header=sci, name="SCI"),
                         fits.ImageHDU(data=dq, name="DQ")])
    path = night_dir / info.filename
    tmp = path.with_name(f".{path.name}.tmp")
    hdus.writeto(tmp, overwrite=True)
    tmp.replace(path)
    return path


def _arc_masses(band, edges, lsf, ix, iy, model, wavecal) -> np.ndarray:
    """Electrons per second per fine bin of the argon lamp; the lamp lights the field unevenly."""
    sigma = model.lsf_sigma_y * float(np.nanmean(wavecal.dispersion))
    lines = [(w, 2000.0 * s) for w, s in lines_in_band(band)]
    spectrum = det.line_bins(edges, lines, sigma)
    u_, v_ = (ix - 140.0) / 140.0, (iy - 140.0) / 140.0
    illumination = 1.0 - 0.15 * (u_ ** 2 + v_ ** 2) + 0.05 * u_
    return illumination[:, None] * spectrum[None, :]


def _write_truth_cube(plan, info, masses, edges, iy, ix, gain) -> None:
    channels = det.channel_masses(masses, edges, optics.channel_edges(info.band)) / gain
    cube = np.full((channels.shape[1], optics.CUBE_SIZE, optics.CUBE_SIZE), np.nan, np.float32)
    cube[:, iy, ix] = channels.T
    out = plan.out / "truth" / f"{info.filename[:-5]}_truth.fits"
    out.parent.mkdir(parents=True, exist_ok=True)
    fits.writeto(out, cube, overwrite=True)


# --- calibrations -----------------------------------------------------------------------------


def _write_calibrations(plan: NightPlan, when: dt.datetime) -> None:
    """Master wavecals (taken the previous day) and the bad-pixel map."""
    directory = plan.out / "calibrations"
    directory.mkdir(parents=True, exist_ok=True)
    mjd = Time(when).mjd - 1.0
    for band in sorted({s.band for s in plan.sequences}):
        header = fits.Header()
        header["OBSTYPE"] = "ARC"
        header["DATE-OBS"] = f"{when - dt.timedelta(days=1):%Y-%m-%d}"
        master_wavecal(band, plan.model, mjd=mjd).write(
            directory / f"S{when - dt.timedelta(days=1):%Y%m%d}E0001_{band}_wavecal.fits",
            extra=header)
    primary = fits.Header()
    primary["FILETYPE"] = ("Bad Pixel Map", "GPI calibration file type")
    primary["ISCALIB"] = "YES"
    primary["MJD-OBS"] = mjd
    bad = _detector(plan).bad.astype(np.uint8)
    fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(bad, name="SCI")]).writeto(
        directory / f"S{when - dt.timedelta(days=1):%Y%m%d}E0002_badpix.fits", overwrite=True)
