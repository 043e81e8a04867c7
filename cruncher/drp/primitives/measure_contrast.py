"""Measure Contrast: the single-frame 5-sigma contrast curve, and three fiducial values in the header."""
from __future__ import annotations

import numpy as np
from astropy.io import fits

from cruncher.drp import contrast
from cruncher.drp.primitive import Primitive, PrimitiveError, register
from cruncher.drp.products import software_cards, write_atomic
from cruncher.instruments.gpi.optics import FIDUCIAL_SEPARATIONS


def fiducial_key(separation: float) -> str:
    """``CONTR025`` for 0.25 arcsec."""
    return f"CONTR{int(round(separation * 100)):03d}"


@register
class MeasureContrast(Primitive):
    name = "Measure Contrast"

    def apply(self, ctx) -> None:
        frame = ctx.require_frame(self.name)
        if ctx.spots is None or ctx.spot_fluxes is None:
            raise PrimitiveError(f"{self.name} needs the satellite spot locations and fluxes")
        image = ctx.filtered if ctx.filtered is not None else ctx.require_cube(self.name)
        seps, curve = contrast.single_frame(image, ctx.spots.centre, ctx.spots.positions,
                                            ctx.spot_fluxes, frame.band)
        values = contrast.at_separations(seps, curve, FIDUCIAL_SEPARATIONS)
        for sep, value in zip(FIDUCIAL_SEPARATIONS, values):
            ctx.set_ext(fiducial_key(sep), value if value is not None else "n/a",
                        f"single-frame 5-sigma contrast at {sep} arcsec")
        shown = ", ".join(f"{s}\"={v:.2e}" for s, v in zip(FIDUCIAL_SEPARATIONS, values) if v)
        ctx.note(f"{self.name}: {shown or 'no fiducial separation measurable'}")
        if self.flag("Save"):
            path = ctx.output_path("contrast")
            header = fits.Header()
            header["FILETYPE"] = ("Single-frame contrast curve", "GPI file type")
            header["DATAFILE"] = (frame.path.name, "raw frame")
            header["OBJECT"] = frame.primary.get("OBJECT", "")
            for key, value, comment in software_cards():
                header[key] = (value, comment)
            table = fits.BinTableHDU.from_columns(
                [fits.Column(name="SEP_ARCSEC", format="D", array=seps),
                 fits.Column(name="CONTRAST", format="D", array=np.nan_to_num(curve, nan=-1.0))],
                name="CONTRAST")
            write_atomic(fits.HDUList([fits.PrimaryHDU(header=header), table]), path)
            ctx.wrote(path)
