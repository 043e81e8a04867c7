"""Quick Wavelength Solution Update: the flexure shift of tonight's traces, from an arc snapshot.

The arc (argon lamp, the band of the coming science sequence) is compared with the master
wavecal; the result is the master moved by the measured ``(dx, dy)``, saved as a quick wavecal
(``<arc>_wavecal.fits``) and registered in the calibration index, where the sequence's frames
find it.
"""
from __future__ import annotations

import dataclasses

from cruncher.drp.flexure import measure_shift
from cruncher.drp.primitive import Primitive, PrimitiveError, register
from cruncher.errors import BadInputError
from cruncher.instruments.gpi.lamps import lines_in_band


@register
class QuickWavelengthSolutionUpdate(Primitive):
    name = "Quick Wavelength Solution Update"

    def apply(self, ctx) -> None:
        frame = ctx.require_frame(self.name)
        if ctx.wavecal is None:
            raise PrimitiveError(f"{self.name} needs Load Wavelength Calibration first")
        if ctx.wavecal.kind != "master":
            raise PrimitiveError(f"{self.name}: the loaded wavecal must be a master")
        lamp = str(frame.primary.get("GCALLAMP", "")).strip()
        if lamp.lower() not in ("ar", "argon"):
            raise PrimitiveError(f"{self.name}: GCALLAMP={lamp!r}; an argon arc is needed")
        try:
            result = measure_shift(frame.data, ctx.wavecal, list(lines_in_band(frame.band)))
        except BadInputError as exc:
            raise PrimitiveError(f"{self.name}: {exc.reason}") from None
        quick = dataclasses.replace(ctx.wavecal.shifted(result.dx, result.dy, kind="quick"),
                                    mjd=frame.mjd,
                                    source=ctx.wavecal_path.name if ctx.wavecal_path else "")
        primary = frame.primary.copy()
        primary["QWCDX"] = (round(result.dx, 4), "measured x shift (px)")
        primary["QWCDY"] = (round(result.dy, 4), "measured y shift (px)")
        primary["QWCLSIG"] = (round(result.line_sigma_px, 3), "arc line sigma along the trace (px)")
        out = ctx.output_path("wavecal")
        quick.write(out, extra=primary)
        ctx.wrote(out)
        if not ctx.calibrations.add_if_inside(out):
            ctx.note(f"{out} is outside the calibrations directory: not indexed")
        ctx.note(f"{self.name}: shift ({result.dx:.3f}, {result.dy:.3f}) px from "
                 f"{result.lenslets} lenslets")
