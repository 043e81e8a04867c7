"""Correct Distortion: resample the cube through the distortion solution, when one exists.

A distortion calibration holds, in its SCI extension, a (2, K) array of polynomial coefficients
giving the x and y offsets (pixels) at which each corrected pixel is found in the uncorrected
cube, as a polynomial in ``u = (x - c) / c``, ``v = (y - c) / c`` with terms ``u^i v^j`` for
``i + j <= ORDER`` in the order of :func:`terms`. Without a solution the cube is left as it is
and the header says so. ``Save="1"`` makes this cube the recipe's product (``_spdc``).
"""
from __future__ import annotations

import numpy as np
from astropy.io import fits
from scipy.ndimage import map_coordinates

from cruncher.drp.primitive import Primitive, PrimitiveError, register


def terms(u: np.ndarray, v: np.ndarray, order: int) -> np.ndarray:
    return np.stack([u ** i * v ** j for i in range(order + 1) for j in range(order + 1 - i)])


@register
class CorrectDistortion(Primitive):
    name = "Correct Distortion"

    def apply(self, ctx) -> None:
        frame = ctx.require_frame(self.name)
        cube = ctx.require_cube(self.name)
        path = ctx.calibrations.find("distortion", mjd=frame.mjd)
        if path is None:
            ctx.set_ext("DRPDIST", "none", "no distortion solution available: not corrected")
            ctx.note(f"{self.name}: no distortion solution; cube left as it is")
        else:
            ctx.cube = self._correct(cube, path)
            ctx.set_ext("DRPDIST", path.name, "distortion solution applied")
            ctx.note(f"{self.name}: {path.name}")
        if self.flag("Save"):
            ctx.cube_product = ctx.output_path("spdc")

    @staticmethod
    def _correct(cube: np.ndarray, path) -> np.ndarray:
        try:
            with fits.open(path) as hdul:
                coeffs = np.asarray(hdul[1].data, np.float64)
                order = int(hdul[1].header.get("ORDER", 3))
        except (OSError, IndexError, ValueError) as exc:
            raise PrimitiveError(f"cannot read distortion solution {path}: {exc}") from None
        ny, nx = cube.shape[1:]
        c = (nx - 1) / 2.0
        y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
        basis = terms((x - c) / c, (y - c) / c, order)
        if coeffs.shape != (2, basis.shape[0]):
            raise PrimitiveError(f"distortion solution {path.name}: expected (2, {basis.shape[0]}) "
                                 f"coefficients for order {order}, got {coeffs.shape}")
        src_x = x + np.tensordot(coeffs[0], basis, axes=1)
        src_y = y + np.tensordot(coeffs[1], basis, axes=1)
        out = np.empty_like(cube)
        for i, plane in enumerate(cube):
            valid = np.isfinite(plane)
            filled = map_coordinates(np.where(valid, plane, 0.0), [src_y, src_x], order=1,
                                     cval=np.nan)
            weight = map_coordinates(valid.astype(np.float64), [src_y, src_x], order=1, cval=0.0)
            out[i] = np.where(weight > 0.99, filled / np.maximum(weight, 1e-12), np.nan)
        return out.astype(np.float32)
