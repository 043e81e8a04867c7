"""Measure satellite spot locations: SATS*, PSFC_*, PSFCENTX/Y, SATSMASK (the star's position)."""
from __future__ import annotations

from cruncher.drp import spots
from cruncher.drp.primitive import Primitive, PrimitiveError, register


@register
class MeasureSatelliteSpotLocations(Primitive):
    name = "Measure satellite spot locations"

    def apply(self, ctx) -> None:
        cube = ctx.require_cube(self.name)
        window = int(self.number("search_window", 20))
        try:
            found = spots.find_spots(cube, ctx.wavelengths, search_window=window)
        except spots.SpotsNotFound as exc:
            raise PrimitiveError(f"{self.name}: {exc} (AO loop open, or not a coronagraphic "
                                 "frame?)") from None
        ctx.spots = found
        ctx.ext_updates.update(spots.header_updates(found))
        cx, cy = found.centre
        ctx.note(f"{self.name}: star at ({cx:.3f}, {cy:.3f}), {int(found.found.sum())} of "
                 f"{found.found.size} spot measurements used")
