"""Interpolate bad pixels in 2D frame: repair flagged pixels from their neighbours.

Bad pixels are those flagged in the bad-pixel map (AUTOMATIC: the nearest one, if any), in the
frame's DQ extension (bit 0), or not finite. ``vertical`` (the default for spectra, which run
along columns) averages the pixels above and below; ``n4n`` the four nearest; ``all8`` all eight.
A pixel with no good neighbour stays NaN for the cube's own repair.
"""
from __future__ import annotations

import numpy as np
from astropy.io import fits

from cruncher.drp.primitive import Primitive, PrimitiveError, register

NEIGHBOURS = {
    "vertical": ((-1, 0), (1, 0)),
    "n4n": ((-1, 0), (1, 0), (0, -1), (0, 1)),
    "all8": tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx),
}


def repair(data: np.ndarray, bad: np.ndarray, offsets) -> np.ndarray:
    """Mean of the good neighbours at ``offsets`` for every bad pixel (NaN if none).

    Only the bad pixels are visited, so the cost follows their number, not the frame's size.
    """
    ys, xs = np.nonzero(bad)
    if ys.size == 0:
        return data
    ny, nx = data.shape
    total = np.zeros(ys.size)
    count = np.zeros(ys.size)
    for dy, dx in offsets:
        yy, xx = ys + dy, xs + dx
        inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        values = np.full(ys.size, np.nan)
        values[inside] = data[yy[inside], xx[inside]]
        usable = inside & ~bad[np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1)] & np.isfinite(values)
        total += np.where(usable, values, 0.0)
        count += usable
    out = data.copy()
    out[ys, xs] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


@register
class InterpolateBadPixels2D(Primitive):
    name = "Interpolate bad pixels in 2D frame"

    def apply(self, ctx) -> None:
        frame = ctx.require_frame(self.name)
        method = self.text("method", "vertical").strip().lower()
        if method not in NEIGHBOURS:
            raise PrimitiveError(f"{self.name}: unknown method {method!r} "
                                 f"({', '.join(NEIGHBOURS)})")
        bad = ~np.isfinite(frame.data)
        if frame.dq is not None:
            bad |= (frame.dq & 1).astype(bool)
        source = "frame DQ"
        path = ctx.calibrations.find("badpix", mjd=frame.mjd)
        if path is not None:
            try:
                bad |= fits.getdata(path, ext=1).astype(bool)
            except (OSError, IndexError, ValueError) as exc:
                raise PrimitiveError(f"cannot read bad-pixel map {path}: {exc}") from None
            source = path.name
        frame.data = repair(frame.data, bad, NEIGHBOURS[method])
        left = int(np.sum(~np.isfinite(frame.data)))
        ctx.set_primary("DRPBADPX", int(bad.sum()), "bad pixels in the 2-D frame")
        ctx.note(f"{self.name}: {int(bad.sum())} bad pixels ({source}), {left} left for the cube")
