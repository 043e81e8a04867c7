"""Interpolate Wavelength Axis: rebin every microspectrum onto the common channels."""
from __future__ import annotations

import numpy as np

from cruncher.drp import extraction
from cruncher.drp.primitive import Primitive, PrimitiveError, register
from cruncher.instruments.gpi.keywords import BAND_EDGES_UM, N_CHANNELS
from cruncher.instruments.gpi.optics import CUBE_SIZE
from cruncher.xp import to_numpy


@register
class InterpolateWavelengthAxis(Primitive):
    name = "Interpolate Wavelength Axis"

    def apply(self, ctx) -> None:
        frame = ctx.require_frame(self.name)
        if ctx.samples is None:
            raise PrimitiveError(f"{self.name} needs Assemble Spectral Datacube first")
        count = int(self.number("Spectralchannels", N_CHANNELS))
        if not 2 <= count <= 200:
            raise PrimitiveError(f"{self.name}: Spectralchannels={count} is out of range")
        edges = np.linspace(*BAND_EDGES_UM[frame.band], count + 1)
        positions = None if count == N_CHANNELS else extraction.channel_positions(
            ctx.plan, ctx.wavecal, edges)
        channels = extraction.rebin(ctx.samples, ctx.plan, ctx.xp, positions)
        cube = to_numpy(extraction.assemble_cube(channels, ctx.plan, CUBE_SIZE, ctx.xp))
        ctx.cube = cube
        ctx.wavelengths = 0.5 * (edges[1:] + edges[:-1])
        ctx.cube_dq = np.zeros(cube.shape, np.uint8)
        outside = np.ones((CUBE_SIZE, CUBE_SIZE), bool)
        outside[ctx.plan.iy, ctx.plan.ix] = False
        ctx.cube_dq[:, outside] = 1
        ctx.note(f"{self.name}: {count} channels")
