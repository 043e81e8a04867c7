"""The demo's night: what is simulated, how fast it is observed, and what it must produce."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cruncher.backend.planning import MIN_CUBES     # the fewest frames a PSF subtraction uses

#: The first target's companion (separation arcsec, contrast, position angle deg).
PLANET = (0.4, 1e-4, 45.0)
#: Every product a finished spectral sequence gets (cADI, the three KLIP reductions, the four
#: injection runs and the two calibrated curves), by the kind the backend announces.
SEQUENCE_PRODUCTS = ("cadi", "cadi_sdi", "klip_general", "klip_tdwarf", "klip_disk",
                     "fakes_L_0", "fakes_L_45", "fakes_T_0", "fakes_T_45",
                     "contrast_L", "contrast_T")


@dataclass(frozen=True)
class DemoNight:
    """The night the demo observes. TWA 7 transits 3.4 deg from the zenith at Gemini South, so its
    field rotates fast (12 deg over the default four frames): enough for every KLIP reduction on a
    short sequence. The night then moves on to TW Hya, which transits 19 minutes later (its field
    rotates as fast) and whose first frame ends the first sequence."""

    frames: int = 4                  # science frames on the planet host
    second_frames: int = 1           # frames on the second target (PSF-subtracted from 2 on)
    darks: int = 3
    cadence_s: float = 2.0           # seconds between two files landing (GPI: about 80 s)
    seed: int = 2
    host: str = "TWA 7"
    second: str = "TW Hya"

    @classmethod
    def full(cls, frames: int | None = None, **kwargs) -> DemoNight:
        """A longer night: 12 frames on the host, 6 on the second target (both fully reduced)."""
        return cls(frames=frames or 12, second_frames=6, **kwargs)

    def describe(self) -> str:
        return (f"darks, an arc, {self.frames} frames of {self.host} (a planet of {PLANET[1]:g} at "
                f"{PLANET[0]}\"), {self.second_frames} of {self.second}")


@dataclass(frozen=True)
class Observed:
    """The simulated night on disk, in the order the files are taken."""

    sources: list[Path]
    truth: dict

    def kind(self, source: Path) -> str:
        return self.truth["frames"][source.name]["kind"]

    def target(self, source: Path) -> str:
        return self.truth["frames"][source.name]["object"]

    @property
    def science(self) -> list[Path]:
        return [p for p in self.sources if self.kind(p) == "science"]

    def sequences(self, *, reducible: bool = False) -> dict[str, list[str]]:
        """Raw file names per target, in observing order (``reducible``: only the sequences long
        enough for PSF subtraction)."""
        out: dict[str, list[str]] = {}
        for source in self.science:
            out.setdefault(self.target(source), []).append(source.name)
        return {t: names for t, names in out.items() if len(names) >= MIN_CUBES or not reducible}

    def planet(self) -> dict | None:
        for sequence in self.truth["sequences"]:
            if sequence["planets"]:
                return {"target": sequence["target"], **sequence["planets"][0]}
        return None


def simulate(night: DemoNight, out: Path) -> Observed:
    """Write the night's raw frames (and the master calibrations made before it) under ``out``."""
    from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan, simulate_night
    from cruncher.instruments.gpi.sim.scene import Planet

    separation, contrast, pa = PLANET
    plan = NightPlan(out=out, seed=night.seed, darks=night.darks, arc_darks=2, sequences=(
        SequencePlan(target=night.host, frames=night.frames, planets=(
            Planet(separation_arcsec=separation, contrast=contrast, pa_deg=pa),)),
        SequencePlan(target=night.second, frames=night.second_frames, arc=False)))
    truth = simulate_night(plan)
    return Observed(sources=sorted((out / "raw").glob("*/*.fits")), truth=truth)

