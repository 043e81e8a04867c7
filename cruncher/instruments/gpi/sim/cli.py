"""``cruncher simulate night|cubes``: simulated GPI data with known truth."""
from __future__ import annotations

import argparse
from pathlib import Path

from cruncher.config import Settings

EPILOG = """\
examples:
  cruncher simulate night --out /tmp/night --frames 40 --planet 0.4,1e-5,L
  cruncher simulate night --out /tmp/night --target "HR 2562" --band J --also "HD 95086:20"
  cruncher simulate cubes --out /tmp/cubes --frames 20 --planet 0.4,1e-4,T

The night goes to OUT/raw/<YYMMDD>/ (raw frames), OUT/calibrations/ (master wavecals, bad-pixel
map) and OUT/truth.json (star centres, flexure, parallactic angles, planet positions); cubes go to
OUT/cubes/<YYMMDD>/.
"""


def register(sub, common) -> None:
    from cruncher.cli import add_command

    parser = sub.add_parser("simulate", help="simulated GPI nights and datacubes with known truth",
                            description="Simulated GPI data with known truth.", epilog=EPILOG,
                            parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter)
    simsub = parser.add_subparsers(dest="sim_command", metavar="WHAT", required=True)
    for name, handler, what in (("night", _night, "raw frames of a night: darks, arc, sequences"),
                                ("cubes", _cubes, "spectral cubes of sequences, made directly")):
        p = add_command(simsub, common, name, handler, help=what, epilog=EPILOG)
        p.add_argument("--out", type=Path, required=True, help="output directory")
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.add_argument("--band", default="H", choices=("Y", "J", "H", "K1", "K2"))
        p.add_argument("--frames", type=int, default=40, help="science frames (default 40)")
        p.add_argument("--target", default="HD 95086", help="OBJECT of the sequence")
        p.add_argument("--planet", action="append", default=[], metavar="SEP,CONTRAST[,TYPE[,PA]]",
                       help="inject a planet: separation (arcsec), band contrast, L or T, sky PA "
                            "(deg); repeatable")
        p.add_argument("--also", action="append", default=[], metavar="TARGET:FRAMES[:BAND]",
                       help="a further sequence after the first (repeatable)")
        p.add_argument("--date", default="2016-03-15", help="UT date of the night (YYYY-MM-DD)")
        p.add_argument("--star-electrons", type=float, default=1e10,
                       help="the star's photo-electrons per frame in the band (default 1e10)")
        p.add_argument("--no-noise", action="store_true", help="noiseless (for exact comparisons)")
        p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
        if name == "cubes":
            p.add_argument("--channels", type=int, help="bin the 37 channels down to this many")
            p.add_argument("--crop", type=int, help="keep a square of this many pixels about the star")
        if name == "night":
            p.add_argument("--darks", type=int, default=5, help="darks at the science ITIME")
            p.add_argument("--truth-cubes", action="store_true",
                           help="also write each science frame's noiseless cube to OUT/truth/")


def plan_from_args(args) -> "object":
    from cruncher.instruments.gpi.sim.night import NightPlan, SequencePlan
    from cruncher.instruments.gpi.sim.scene import Planet

    try:
        planets = tuple(Planet.parse(text) for text in args.planet)
    except ValueError as exc:
        raise SystemExit(f"cruncher simulate: {exc}") from None
    sequences = [SequencePlan(target=args.target, frames=args.frames, band=args.band,
                              planets=planets, star_electrons=args.star_electrons)]
    for text in args.also:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[1].isdigit():
            raise SystemExit(f"cruncher simulate: --also {text!r}: expected TARGET:FRAMES[:BAND]")
        sequences.append(SequencePlan(target=parts[0], frames=int(parts[1]),
                                      band=parts[2] if len(parts) == 3 else args.band,
                                      star_electrons=args.star_electrons))
    return NightPlan(out=args.out, sequences=tuple(sequences), date=args.date, seed=args.seed,
                     noise=not args.no_noise, darks=getattr(args, "darks", 5),
                     truth_cubes=getattr(args, "truth_cubes", False), workers=args.workers)


def _night(args, settings: Settings) -> int:
    from cruncher.instruments.gpi.sim.night import simulate_night

    truth = simulate_night(plan_from_args(args))
    kinds = [f["kind"] for f in truth["frames"].values()]
    print(f"simulated {len(kinds)} raw frames ({kinds.count('dark')} darks, {kinds.count('arc')} "
          f"arcs, {kinds.count('science')} science) in {truth['seconds']:.1f} s")
    print(f"  raw frames:   {args.out / 'raw'}")
    print(f"  calibrations: {args.out / 'calibrations'}")
    print(f"  truth:        {args.out / 'truth.json'} (flexure {truth['flexure']})")
    return 0


def _cubes(args, settings: Settings) -> int:
    from cruncher.instruments.gpi.sim.cubes import simulate_cubes

    truth = simulate_cubes(plan_from_args(args), channels=args.channels, crop=args.crop)
    print(f"simulated {len(truth['frames'])} cubes in {truth['seconds']:.1f} s under "
          f"{args.out / 'cubes'}; truth in {args.out / 'truth.json'}")
    return 0
