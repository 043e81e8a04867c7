"""Interpolate bad pixels in cube: fill what the 2-D repair could not, from spatial neighbours.

Inside the field of view (lenslets that have a spectrum) every NaN is replaced by the mean of its
finite neighbours in the same slice, growing inwards until none is left (clusters of bad detector
pixels map to far-apart lenslets, so the cube's neighbours are good). Filled pixels get DQ bit 5.
"""
from __future__ import annotations

import numpy as np

from cruncher.drp.primitive import Primitive, register
from cruncher.drp.primitives.badpix_2d import NEIGHBOURS, repair

PIPELINE_BAD = 1 << 5
MAX_PASSES = 20


@register
class InterpolateBadPixelsInCube(Primitive):
    name = "Interpolate bad pixels in cube"

    def apply(self, ctx) -> None:
        cube = ctx.require_cube(self.name).astype(np.float64)
        inside = np.zeros(cube.shape[1:], bool)
        inside[ctx.plan.iy, ctx.plan.ix] = True
        holes = ~np.isfinite(cube) & inside[None]
        total = int(holes.sum())
        for index in np.nonzero(holes.any(axis=(1, 2)))[0]:
            plane = cube[index]
            for _ in range(MAX_PASSES):
                bad = ~np.isfinite(plane) & inside
                if not bad.any():
                    break
                plane = repair(plane, bad, NEIGHBOURS["all8"])
            cube[index] = np.where(inside, plane, np.nan)
        ctx.cube = cube.astype(np.float32)
        ctx.cube_dq[holes] |= PIPELINE_BAD
        left = int((~np.isfinite(ctx.cube) & inside[None]).sum())
        ctx.set_ext("DRPCUBAD", total, "cube pixels filled from neighbours")
        ctx.note(f"{self.name}: {total} filled, {left} left")
