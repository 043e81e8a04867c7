"""The demo's summary: frames and products, latencies, the planet, the contrast, where things are.

Next to each latency, the Data Cruncher's own figures (Wang et al. 2018) for comparison.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cruncher.demo.night import Observed
from cruncher.demo.timeline import Timeline
from cruncher.instruments.gpi.optics import FIDUCIAL_SEPARATIONS, LENSLET_SCALE

#: A detection is the injected planet when it lies this close to where the truth puts it.
MATCH_PX = 2.0


@dataclass
class Report:
    frames: int
    products: dict[str, int]
    latencies: dict[str, list[float]]           # measure -> seconds (one value per frame/sequence)
    planet: dict | None                         # truth, plus "snr" when found
    contrast: dict[str, dict[str, float | None]]   # planet type -> separation -> contrast
    places: dict[str, str]
    missing: list[str]
    failures: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)     # lines about the cubes against the truth
    elapsed_s: float = 0.0

    @property
    def planet_found(self) -> bool:
        return bool(self.planet and self.planet.get("snr") is not None)

    @property
    def ok(self) -> bool:
        return not self.missing and self.planet_found

    def as_dict(self) -> dict:
        return {**asdict(self), "planet_found": self.planet_found, "ok": self.ok}


PAPER = {"cube": "", "quicklook": "paper: ~1 min", "first KLIP": "paper: ~10 min",
         "calibrated contrast": "paper: ~1 h"}
LATENCY_LABELS = {"cube": "file landed -> its cube", "quicklook": "file landed -> quicklook with it",
                  "first KLIP": "sequence end -> first KLIP",
                  "calibrated contrast": "sequence end -> calibrated contrast"}


def build(observed: Observed, timeline: Timeline, missing: list[str], places: dict[str, str],
          *, failed_jobs: list[dict] = (), **extra) -> Report:
    """``failed_jobs``: the journal's failed rows (a failed calibration recipe announces no
    failure event, but the products that needed it go missing)."""
    products: dict[str, int] = {}
    for product in timeline.products:
        products[product.kind] = products.get(product.kind, 0) + 1
    return Report(frames=len(timeline.landed), products=products,
                  latencies=latencies(observed, timeline), planet=planet(observed, timeline),
                  contrast=contrast(observed, timeline), places=places, missing=missing,
                  failures=failures(timeline, failed_jobs), **extra)


def failures(timeline: Timeline, failed_jobs: list[dict]) -> list[str]:
    announced = {f.job_id for f in timeline.failures}
    return [f"{f.stage} {f.job_id}: {f.reason}" for f in timeline.failures] + [
        f"{row['kind']} {row['id']}: {row['error']}" for row in failed_jobs
        if row["id"] not in announced]


def latencies(observed: Observed, timeline: Timeline) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {key: [] for key in LATENCY_LABELS}
    for source in observed.science:
        landed = timeline.landed_at(source.name)
        cube, quicklook = timeline.cube_of(source.name), timeline.first_quicklook_with(source.name)
        if landed is None:
            continue
        if cube is not None:
            out["cube"].append(cube.time - landed)
        if quicklook is not None:
            out["quicklook"].append(quicklook.time - landed)
    for names in observed.sequences(reducible=True).values():
        ended = timeline.landed_at(names[-1])
        for key, kind in (("first KLIP", "klip_general"), ("calibrated contrast", "contrast_L")):
            made = timeline.of_sequence(kind, names)
            if ended is not None and made is not None:
                out[key].append(made.time - ended)
    return out


def planet(observed: Observed, timeline: Timeline) -> dict | None:
    """The injected planet, with the SNR of the general KLIP reduction's detection at its place."""
    truth = observed.planet()
    if truth is None:
        return None
    names = observed.sequences().get(truth["target"], [])
    reduction = timeline.of_sequence("klip_general", names)
    out = dict(truth, snr=None)
    for found in (reduction.extras.get("detections", []) if reduction else []):
        if _distance_px(found, truth) <= MATCH_PX:
            out.update(snr=found["snr"], found_sep=found["sep_arcsec"], found_pa=found["pa_deg"])
            break
    return out


def _distance_px(found: dict, truth: dict) -> float:
    def xy(sep_arcsec: float, pa_deg: float) -> tuple[float, float]:
        r = sep_arcsec / LENSLET_SCALE
        return r * math.sin(math.radians(pa_deg)), r * math.cos(math.radians(pa_deg))
    (x1, y1), (x2, y2) = xy(found["sep_arcsec"], found["pa_deg"]), \
        xy(truth["separation_arcsec"], truth["pa_deg"])
    return math.hypot(x1 - x2, y1 - y2)


def contrast(observed: Observed, timeline: Timeline) -> dict[str, dict[str, float | None]]:
    """The planet host's calibrated 5-sigma contrast at the fiducial separations."""
    truth = observed.planet()
    names = observed.sequences().get(truth["target"] if truth else "", [])
    out = {}
    for planet_type in ("L", "T"):
        curve = timeline.of_sequence(f"contrast_{planet_type}", names)
        fiducial = curve.extras.get("fiducial", {}) if curve else {}
        out[planet_type] = {f"{sep:g}": fiducial.get(f"contrast_{int(round(sep * 100)):03d}")
                            for sep in FIDUCIAL_SEPARATIONS}
    return out


# --- printing ---------------------------------------------------------------------------------


def text(report: Report) -> str:
    lines = ["", "Summary", f"  frames landed: {report.frames}; products: " + ", ".join(
        f"{n} {kind}" for kind, n in sorted(report.products.items()))]
    lines.append("  latencies (median, range; seconds):")
    for key, label in LATENCY_LABELS.items():
        values = report.latencies.get(key, [])
        measured = (f"{statistics.median(values):7.1f} ({min(values):.1f} - {max(values):.1f}, "
                    f"{len(values)})" if values else "   none")
        lines.append(f"    {label:<38} {measured:<28} {PAPER[key]}")
    lines += _planet_lines(report) + _contrast_lines(report) + report.checks
    lines.append("  where:")
    lines += [f"    {name:<12} {place}" for name, place in report.places.items()]
    if report.failures:
        lines.append(f"  failures ({len(report.failures)}):")
        lines += [f"    {f}" for f in report.failures[:10]]
    if report.missing:
        lines.append(f"  MISSING ({len(report.missing)}): " + "; ".join(report.missing[:12]))
    lines.append(f"demo {'succeeded' if report.ok else 'FAILED'} in {report.elapsed_s:.0f} s")
    return "\n".join(lines)


def _planet_lines(report: Report) -> list[str]:
    p = report.planet
    if p is None:
        return ["  planet: none injected"]
    where = f"{p['contrast']:g} at {p['separation_arcsec']}\" PA {p['pa_deg']:g} deg around {p['target']}"
    if p.get("snr") is None:
        return [f"  planet ({where}): NOT FOUND by the general KLIP reduction"]
    return [f"  planet ({where}): found, SNR {p['snr']:.1f} at {p['found_sep']:.3f}\" "
            f"PA {p['found_pa']:.1f} deg"]


def _contrast_lines(report: Report) -> list[str]:
    lines = []
    for planet_type, values in report.contrast.items():
        shown = ", ".join(f'{sep}": ' + (f"{v:.1e}" if v is not None else "-")
                          for sep, v in values.items())
        lines.append(f"  calibrated 5-sigma contrast, {planet_type}-type planets: {shown}")
    return lines


def places(settings, timeline: Timeline) -> dict[str, str]:
    """Where the database, products and logs are, and each sequence's latest quicklook."""
    out = {"database": settings.database.url, "products": str(settings.paths.reduced),
           "logs": str(settings.paths.logs)}
    for product in timeline.products:          # in the order made: the last one of each stays
        if product.kind == "quicklook_png":
            out[f"quicklook {Path(product.path).parents[2].name.replace('_', ' ')}"] = product.path
    return out
