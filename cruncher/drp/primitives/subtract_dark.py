"""Subtract Dark Background: remove the master dark of the same exposure time."""
from __future__ import annotations

import numpy as np
from astropy.io import fits

from cruncher.drp.primitive import Primitive, PrimitiveError, register
from cruncher.drp.primitives.load_wavecal import resolve_calibration


@register
class SubtractDarkBackground(Primitive):
    name = "Subtract Dark Background"

    def apply(self, ctx) -> None:
        frame = ctx.require_frame(self.name)
        choice = self.text("CalibrationFile", "AUTOMATIC")
        if choice.upper() == "AUTOMATIC":
            path = ctx.calibrations.best("dark", mjd=frame.mjd, itime=frame.itime)
        else:
            path = resolve_calibration(choice, ctx.calibrations.directory)
        try:
            dark = fits.getdata(path, ext=1).astype(np.float64)
        except (OSError, IndexError, ValueError) as exc:
            raise PrimitiveError(f"cannot read dark {path}: {exc}") from None
        if dark.shape != frame.data.shape:
            raise PrimitiveError(f"dark {path.name} has shape {dark.shape}, the frame "
                                 f"{frame.data.shape}")
        frame.data -= dark
        ctx.set_primary("DRPDARK", path.name, "dark subtracted")
        ctx.note(f"{self.name}: {path.name}")
