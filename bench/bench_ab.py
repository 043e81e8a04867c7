"""Two checkouts of cruncher timed on the same KLIP job, runs interleaved (A, B, A, B, ...).

    python bench/bench_ab.py OTHER_CHECKOUT [--cubes 40] [--pairs 3] [--engine fast]

On a machine whose speed drifts by several per cent within an hour (a shared virtual machine), a
change of a few per cent only shows when its runs alternate with the code it replaces. ``A`` is
the checkout given (e.g. ``git worktree add /tmp/before <commit>``), ``B`` this one; each job is
``python -m cruncher.psfsub`` started in that checkout (``-m`` puts the working directory first on
the module path) with BLAS on one thread, on ``bench_psfsub.py``'s standard dataset. Prints and saves (``bench/results/<date>-ab.json``) every
run's wall time and peak memory, the medians and the ratio A / B.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_psfsub import make_dataset, run_job, spread  # noqa: E402
from common import save  # noqa: E402

HERE = Path(__file__).resolve().parent.parent


def commit(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="the checkout to compare with (A)")
    parser.add_argument("--cubes", type=int, default=40)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--engine", default="fast")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "work" / "psfsub")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    inputs = spread(make_dataset(workdir), args.cubes)
    sides = {"A": args.other.resolve(), "B": HERE}
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    payload = {"cubes": args.cubes, "engine": args.engine,
               "commits": {side: commit(path) for side, path in sides.items()}, "runs": runs}
    here = Path.cwd()
    try:
        for pair in range(args.pairs):
            for side, path in sides.items():
                os.chdir(path)
                found = run_job(workdir, "klip_general", inputs, {"engine": args.engine})
                runs[side].append({k: found[k] for k in ("wall_s", "peak_gb")})
                print(f"pair {pair + 1}, {side} ({payload['commits'][side]}): "
                      f"{found['wall_s']:.1f} s, {found['peak_gb']:.2f} GB", flush=True)
                save("ab", payload)
    finally:
        os.chdir(here)
    for side in sides:
        payload[f"median_wall_s_{side}"] = statistics.median(r["wall_s"] for r in runs[side])
        payload[f"median_peak_gb_{side}"] = statistics.median(r["peak_gb"] for r in runs[side])
    payload["ratio_wall_A_over_B"] = round(payload["median_wall_s_A"] / payload["median_wall_s_B"], 3)
    print(save("ab", payload))


if __name__ == "__main__":
    main()
