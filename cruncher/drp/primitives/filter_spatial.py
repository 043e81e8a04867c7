"""Filter datacube spatially: a high-passed copy of the cube for the photometry that follows.

Each slice minus a median filter of ``hp_boxsize`` pixels; the filtered cube is not saved.
"""
from __future__ import annotations

import numpy as np

from cruncher.drp.primitive import Primitive, register
from cruncher.drp.spots import highpass


@register
class FilterDatacubeSpatially(Primitive):
    name = "Filter datacube spatially"

    def apply(self, ctx) -> None:
        cube = ctx.require_cube(self.name)
        box = int(self.number("hp_boxsize", 15))
        ctx.filtered = highpass(cube, box).astype(np.float32)
        ctx.note(f"{self.name}: {box}-pixel high-pass")
