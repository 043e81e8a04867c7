"""Combine 2D dark images: a master dark from a sequence of darks of one exposure time.

The frames are combined in blocks of rows straight from the files (memory stays small even for
the 80 darks GPIES takes at the end of a night). ``Method``: ``median`` (default), ``mean`` or
``sigmaclip`` (mean after rejecting 3-sigma outliers). The master dark is registered in the
calibration index when it is written into the calibrations directory.
"""
from __future__ import annotations

import contextlib

import numpy as np
from astropy.io import fits

from cruncher.drp.context import load_raw_frame
from cruncher.drp.primitive import Primitive, PrimitiveError, register
from cruncher.drp.products import calibration_hdus, write_atomic
from cruncher.instruments.fitsio import read_headers

BLOCK_ROWS = 128


def _combine(stack: np.ndarray, method: str) -> np.ndarray:
    if method == "median":
        return np.nanmedian(stack, axis=0)
    if method == "mean":
        return np.nanmean(stack, axis=0)
    median = np.nanmedian(stack, axis=0)
    spread = 1.4826 * np.nanmedian(np.abs(stack - median), axis=0)
    keep = np.abs(stack - median) <= 3 * np.maximum(spread, 1e-6)
    return np.nanmean(np.where(keep, stack, np.nan), axis=0)


@register
class Combine2DDarkImages(Primitive):
    name = "Combine 2D dark images"
    level = "sequence"

    def apply(self, ctx) -> None:
        method = self.text("Method", "median").strip().lower()
        if method not in ("median", "mean", "sigmaclip"):
            raise PrimitiveError(f"{self.name}: unknown Method {method!r} (median, mean, sigmaclip)")
        paths = ctx.inputs
        if len(paths) < 2:
            raise PrimitiveError(f"{self.name} needs at least two darks, got {len(paths)}")
        headers = [read_headers(p) for p in paths]
        itimes = [float(h[1].get("ITIME", h[0].get("ITIME", np.nan))) for h in headers]
        if not np.allclose(itimes, itimes[0], rtol=1e-3):
            raise PrimitiveError(f"{self.name}: darks of different exposure times {sorted(set(itimes))}")
        load_raw_frame(paths[-1])  # full checks (shape, finite pixels) on one frame
        master = self._combine_files(paths, method)
        last = headers[-1]
        mjds = [float(h[0].get("MJD-OBS", 0.0)) for h in headers]
        primary = last[0].copy()
        primary["MJD-OBS"] = (float(np.mean(mjds)), "mean MJD of the darks")
        primary["NDARKS"] = (len(paths), "darks combined")
        primary["DRPCMETH"] = (method, "combination method")
        hdus = calibration_hdus(primary, master, "Dark File",
                                extra={"ITIME": (itimes[0], "exposure time per coadd (s)"),
                                       "BUNIT": ("ADU per coadd", "")},
                                history=[f"dark from {p.name}" for p in paths])
        out = ctx.output_dir / f"{paths[-1].name.split('.')[0]}_dark.fits"
        write_atomic(hdus, out)
        ctx.wrote(out)
        if not ctx.calibrations.add_if_inside(out):
            ctx.note(f"{out} is outside the calibrations directory: not indexed")
        ctx.note(f"{self.name}: {len(paths)} darks of {itimes[0]:.2f} s ({method})")

    @staticmethod
    def _combine_files(paths, method: str) -> np.ndarray:
        with contextlib.ExitStack() as stack:
            data = []
            for path in paths:
                hdul = stack.enter_context(fits.open(path, memmap=True))
                data.append(hdul[1].data if len(hdul) > 1 and hdul[1].data is not None
                            else hdul[0].data)
            shape = data[0].shape
            if any(d.shape != shape for d in data):
                raise PrimitiveError("darks of different shapes")
            out = np.empty(shape, np.float32)
            for start in range(0, shape[0], BLOCK_ROWS):
                block = np.stack([np.asarray(d[start:start + BLOCK_ROWS], np.float64) for d in data])
                block[~np.isfinite(block)] = np.nan
                out[start:start + BLOCK_ROWS] = _combine(block, method)
        return out
