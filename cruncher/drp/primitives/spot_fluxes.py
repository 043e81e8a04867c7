"""Measure satellite spot peak fluxes: SATF* (Gaussian matched filter at each spot)."""
from __future__ import annotations

import numpy as np

from cruncher.drp import spots
from cruncher.drp.primitive import Primitive, PrimitiveError, register


@register
class MeasureSatelliteSpotPeakFluxes(Primitive):
    name = "Measure satellite spot peak fluxes"

    def apply(self, ctx) -> None:
        if ctx.spots is None:
            raise PrimitiveError(f"{self.name} needs Measure satellite spot locations first")
        image = ctx.filtered if ctx.filtered is not None else ctx.require_cube(self.name)
        radius = self.number("ap_rad", 7.0)
        fluxes = spots.peak_fluxes(image, ctx.spots.positions, ctx.wavelengths, radius)
        fluxes = np.where(ctx.spots.found, fluxes, np.nan)
        ctx.spot_fluxes = fluxes
        ctx.ext_updates.update({k: v for k, v in spots.header_updates(ctx.spots, fluxes).items()
                                if k.startswith("SATF")})
        ctx.note(f"{self.name}: mean peak {np.nanmean(fluxes):.2f} ADU")
