"""Running one recipe: check it, run its primitives on its frames, write its products.

Primitives before the first ``sequence``-level one run on each input frame in turn; a frame whose
chain marked a cube for saving (Correct Distortion with ``Save="1"``) has its cube written after
the chain, with every header the later primitives added. Sequence-level primitives then run once
with all inputs. Any failure (a bad file, a missing calibration, a primitive that cannot do its
work, an unknown primitive) fails the recipe with one clear reason in the DRP log; a cube already
complete when a later header-only step fails is still written, as the GPI DRP does.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from cruncher.drp.calibrations import CalibrationIndex
from cruncher.drp.context import ReductionContext, load_raw_frame
from cruncher.drp.drplog import DrpLog
from cruncher.drp.primitive import Primitive, lookup
from cruncher.drp.products import cube_hdus, write_atomic
from cruncher.errors import CruncherError
from cruncher.recipes.recipe import Recipe

_log = logging.getLogger(__name__)


@dataclass
class RecipeOutcome:
    """How a recipe ended: its products, and the reason when it failed."""

    ok: bool
    products: list[Path] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0


def _steps(recipe: Recipe) -> tuple[list[Primitive], list[Primitive]]:
    steps = [lookup(p.name)(p.params) for p in recipe.primitives]
    split = next((i for i, s in enumerate(steps) if s.level == "sequence"), len(steps))
    return steps[:split], steps[split:]


def run_recipe(recipe: Recipe, *, name: str, calibrations: CalibrationIndex, log: DrpLog,
               xp: ModuleType = np) -> RecipeOutcome:
    """Run ``recipe`` (queue name ``name``) to the end; never raises for bad input."""
    start = time.perf_counter()
    outcome = RecipeOutcome(ok=False)
    log.write(name, f"Reading recipe: {recipe.name} ({len(recipe.files)} files) -> "
                    f"{recipe.output_dir}")
    try:
        recipe.check_inputs_within()
        per_frame, per_sequence = _steps(recipe)
        Path(recipe.output_dir).mkdir(parents=True, exist_ok=True)
        for path in recipe.input_paths if per_frame else []:
            _run_frame(recipe, name, path, per_frame, calibrations, log, xp, outcome)
        if per_sequence:
            ctx = ReductionContext(recipe=recipe, recipe_name=name, calibrations=calibrations,
                                   log=log, xp=xp, inputs=list(recipe.input_paths))
            try:
                for step in per_sequence:
                    step(ctx)
            finally:
                outcome.products += ctx.written
        outcome.ok = True
    except CruncherError as exc:
        outcome.reason = getattr(exc, "reason", None) or str(exc)
        if isinstance(getattr(exc, "path", None), str) and exc.path not in outcome.reason:
            outcome.reason = f"{Path(exc.path).name}: {outcome.reason}"
    except Exception as exc:  # a bug must not kill the worker: record it with its traceback
        outcome.reason = f"internal error: {type(exc).__name__}: {exc}"
        log.write(name, traceback.format_exc())
        _log.exception("recipe %s: internal error", name)
    outcome.seconds = time.perf_counter() - start
    if outcome.ok:
        log.write(name, f"Recipe done in {outcome.seconds:.3f} s: {len(outcome.products)} products")
    else:
        log.write(name, f"Recipe FAILED: {outcome.reason}")
    return outcome


def _run_frame(recipe, name, path, steps, calibrations, log, xp, outcome) -> None:
    ctx = ReductionContext(recipe=recipe, recipe_name=name, calibrations=calibrations, log=log,
                           xp=xp, frame=load_raw_frame(path))
    try:
        for step in steps:
            step(ctx)
    finally:
        if ctx.cube_product is not None and ctx.cube is not None:
            write_atomic(cube_hdus(ctx), ctx.cube_product)
            ctx.wrote(ctx.cube_product)
        outcome.products += ctx.written
