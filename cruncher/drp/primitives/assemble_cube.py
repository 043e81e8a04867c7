"""Assemble Spectral Datacube: 3 x 1 box sums along every microspectrum; AVPARANG."""
from __future__ import annotations

from cruncher.drp import extraction, parang
from cruncher.drp.primitive import Primitive, PrimitiveError, register
from cruncher.instruments.gpi.optics import channel_edges


_PLANS: dict[tuple, extraction.ExtractionPlan] = {}
_KEEP = 4


def _plan(key: tuple, wavecal, band: str) -> extraction.ExtractionPlan:
    """Plans are reused by a worker for every frame extracted with the same wavecal and shift."""
    if key not in _PLANS:
        while len(_PLANS) >= _KEEP:
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[key] = extraction.make_plan(wavecal, channel_edges(band))
    return _PLANS[key]


@register
class AssembleSpectralDatacube(Primitive):
    name = "Assemble Spectral Datacube"

    def apply(self, ctx) -> None:
        frame = ctx.require_frame(self.name)
        wavecal = ctx.wavecal
        if wavecal is None:
            raise PrimitiveError(f"{self.name} needs Load Wavelength Calibration first")
        key = (str(ctx.wavecal_path), wavecal.shift, wavecal.band)
        ctx.plan = _plan(key, wavecal, frame.band)
        ctx.samples = extraction.box_samples(frame.data, ctx.plan, ctx.xp)
        avparang = parang.from_headers(frame.primary, frame.ext)
        ctx.set_ext("AVPARANG", round(avparang, 5), "exposure-averaged parallactic angle (deg)")
        ctx.note(f"{self.name}: {ctx.plan.n_lenslets} lenslets, AVPARANG {avparang:.3f} deg")
