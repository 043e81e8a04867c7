"""Update Spot Shifts for Flexure: move the wavecal's traces to where they are tonight.

Methods: ``None``; ``Manual`` (``manual_dx``, ``manual_dy`` pixels); ``Lookup`` (the shift measured
from the sequence's arc snapshot: already in a quick wavecal, else taken from the quick wavecal
of the sequence in the calibration index). ``BandShift`` and ``Auto`` behave as ``Lookup``.
"""
from __future__ import annotations

from cruncher.drp.primitive import Primitive, PrimitiveError, register
from cruncher.instruments.gpi.wavecal import Wavecal


@register
class UpdateSpotShiftsForFlexure(Primitive):
    name = "Update Spot Shifts for Flexure"

    def apply(self, ctx) -> None:
        frame = ctx.require_frame(self.name)
        if ctx.wavecal is None:
            raise PrimitiveError(f"{self.name} needs Load Wavelength Calibration first")
        method = self.text("method", "Lookup").strip().lower()
        if method == "none":
            note = "none applied"
        elif method == "manual":
            dx, dy = self.number("manual_dx", 0.0), self.number("manual_dy", 0.0)
            ctx.wavecal = ctx.wavecal.shifted(dx, dy)
            note = f"manual shift ({dx:.3f}, {dy:.3f})"
        elif method in ("lookup", "bandshift", "auto"):
            note = self._lookup(ctx, frame)
        else:
            raise PrimitiveError(f"{self.name}: unknown method {method!r} (None, Manual, Lookup)")
        dx, dy = ctx.wavecal.shift
        ctx.set_ext("FLEXDX", round(dx, 4), "x shift of the traces from the master (px)")
        ctx.set_ext("FLEXDY", round(dy, 4), "y shift of the traces from the master (px)")
        ctx.note(f"{self.name}: {note}")

    def _lookup(self, ctx, frame) -> str:
        if ctx.wavecal.kind == "quick":
            return "the quick wavecal already holds the arc's shift"
        path = ctx.calibrations.find("wavecal", band=frame.band, mjd=frame.mjd)
        if path is None or path == ctx.wavecal_path:
            return "no arc snapshot for this sequence: no flexure correction"
        quick = Wavecal.read(path)
        if quick.kind != "quick":
            return "no arc snapshot for this sequence: no flexure correction"
        ctx.wavecal = ctx.wavecal.shifted(*quick.shift)
        return f"shift ({quick.shift[0]:.3f}, {quick.shift[1]:.3f}) from {path.name}"
