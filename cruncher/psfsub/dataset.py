"""A sequence of spectral cubes, read from our GPI ``_spdc`` files, for PSF subtraction.

A light reader (no process pool, no recentring): the cubes (or, for jobs that hand the pixels to
pyKLIP's own reader, only their shape), each slice's star centre (the DRP's
spot-based ``PSFC_<i>``), each cube's parallactic angle and the angle pyKLIP rotates it by, the
wavelengths, and the satellite-spot photometry that converts ADU into contrast. Problems that
make a dataset unusable are :class:`~cruncher.errors.BadInputError` (permanent for the backend):
an unreadable or truncated cube, a wrong shape, mixed bands, missing spot keywords, too few cubes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from cruncher.errors import BadInputError
from cruncher.instruments.fitsio import read_headers
from cruncher.instruments.gpi import keywords as kw
from cruncher.instruments.gpi import optics


@dataclass
class Dataset:
    paths: tuple[str, ...]
    cubes: np.ndarray | None   # (N, C, Y, X) float32, NaN outside the field; None: not read
    centers: np.ndarray        # (N, C, 2) star (x, y) per slice
    parangs: np.ndarray        # (N,) AVPARANG (deg)
    wavelengths: np.ndarray    # (C,) microns
    spot_flux: np.ndarray      # (N, C) mean satellite-spot peak (ADU), NaN if unknown
    band: str
    target: str
    date: str                  # YYYYMMDD of the first cube
    ifs_rotation: float = optics.IFS_ROTATION
    headers: tuple[fits.Header, ...] = ()
    cube_shape: tuple[int, ...] = ()    # (C, Y, X) of every cube

    @property
    def n_cubes(self) -> int:
        return len(self.paths) if self.cubes is None else self.cubes.shape[0]

    @property
    def angles(self) -> np.ndarray:
        """The angle (deg, counter-clockwise) pyKLIP derotates each cube by."""
        return optics.pyklip_angle(self.parangs, self.ifs_rotation)

    @property
    def field_rotation(self) -> float:
        """Total field rotation of the sequence (deg)."""
        unwrapped = np.degrees(np.unwrap(np.radians(self.parangs)))
        return float(np.ptp(unwrapped)) if len(unwrapped) else 0.0

    @property
    def dn_per_contrast(self) -> np.ndarray:
        """(N, C) ADU of a point source of contrast 1 (the star's peak), from the spots."""
        return self.spot_flux / optics.SPOT_RATIO[self.band]

    @property
    def tag(self) -> str:
        """``S20160315-H``: how products of this dataset are named."""
        return f"S{self.date}-{self.band}"

    @property
    def raw_names(self) -> list[str]:
        return [h.get("DATAFILE") or Path(p).name for h, p in zip(self.headers, self.paths)]


def load(paths: list[str] | tuple[str, ...], *, min_cubes: int = 2,
         pixels: bool = True) -> Dataset:
    """Read a sequence of spectral cubes; raise BadInputError naming the first bad one.

    ``pixels=False`` reads the headers only (``cubes`` is None): for jobs whose pixels pyKLIP's
    own reader loads, which saves reading them twice and holding a second copy (467 MB for 40
    cubes). The files are still checked: complete, three axes, a wavelength axis.
    """
    if len(paths) < min_cubes:
        raise BadInputError(paths[0] if paths else "<dataset>",
                            f"{len(paths)} cube(s): at least {min_cubes} are needed")
    cubes = None
    centers, parangs, fluxes, prims = [], [], [], []
    band = target = date = shape = None
    wavelengths = None
    for index, path in enumerate(paths):
        primary, sci, data = _read(path, pixels)
        this_shape = data.shape if pixels else _header_shape(sci)
        this_band = kw.band_from_filter(primary.get("IFSFILT"))
        if band is None:
            band, target, shape = this_band, str(primary.get("OBJECT", "")), this_shape
            date = str(primary.get("DATE-OBS", ""))[:10].replace("-", "")
            wavelengths = _wavelengths(sci, shape[0])
        elif this_band != band or this_shape != shape:
            raise BadInputError(path, f"does not match the first cube (band {this_band} vs {band},"
                                      f" shape {this_shape} vs {shape})")
        if pixels:
            if cubes is None:
                cubes = np.empty((len(paths), *shape), np.float32)
            cubes[index] = data     # converted from the file's byte order as it is copied
        centers.append(_centers(path, sci, shape[0]))
        parangs.append(_number(path, sci, "AVPARANG"))
        fluxes.append(_spot_fluxes(sci, shape[0]))
        prims.append(primary)
    return Dataset(paths=tuple(str(p) for p in paths), cubes=cubes,
                   centers=np.stack(centers), parangs=np.array(parangs),
                   wavelengths=wavelengths, spot_flux=np.stack(fluxes), band=band,
                   target=target, date=date,
                   ifs_rotation=float(prims[0].get("IFSROTAT", optics.IFS_ROTATION)),
                   headers=tuple(prims), cube_shape=tuple(shape))


def _read(path: str, pixels: bool = True) -> tuple[fits.Header, fits.Header, np.ndarray | None]:
    headers = read_headers(path)
    if len(headers) < 2:
        raise BadInputError(path, "no SCI extension: not a GPI cube")
    data = None
    if pixels:
        try:
            data = fits.getdata(path, 1)
        except (OSError, ValueError, TypeError) as exc:
            raise BadInputError(path, f"cannot read the cube: {exc}") from None
        if data is None or data.ndim != 3:
            raise BadInputError(path, "not a spectral cube "
                                      f"(shape {None if data is None else data.shape})")
    elif headers[1].get("NAXIS") != 3:
        raise BadInputError(path, f"not a spectral cube ({headers[1].get('NAXIS')} axes)")
    if str(headers[1].get("CTYPE3", "")).strip() != "WAVE":
        raise BadInputError(path, "not a spectral cube (CTYPE3 is not WAVE)")
    return headers[0], headers[1], data


def _header_shape(sci: fits.Header) -> tuple[int, int, int]:
    return int(sci["NAXIS3"]), int(sci["NAXIS2"]), int(sci["NAXIS1"])


def _number(path: str, header: fits.Header, key: str) -> float:
    try:
        return float(header[key])
    except (KeyError, ValueError, TypeError):
        raise BadInputError(path, f"missing or unreadable keyword {key}") from None


def _wavelengths(sci: fits.Header, count: int) -> np.ndarray:
    start, step = float(sci["CRVAL3"]), float(sci["CD3_3"])
    ref = float(sci.get("CRPIX3", 1.0))
    return start + step * (np.arange(count) + 1 - ref)


def _centers(path: str, sci: fits.Header, count: int) -> np.ndarray:
    out = np.empty((count, 2))
    for c in range(count):
        if f"PSFC_{c}" in sci:
            out[c] = [float(v) for v in str(sci[f"PSFC_{c}"]).split()]
        elif f"SATS{c}_0" in sci:
            spots = [[float(v) for v in str(sci[f"SATS{c}_{k}"]).split()] for k in range(4)]
            out[c] = np.mean(spots, axis=0)
        elif "PSFCENTX" in sci:
            out[c] = [float(sci["PSFCENTX"]), float(sci["PSFCENTY"])]
        else:
            raise BadInputError(path, "no star position (PSFC_*, SATS* or PSFCENTX/Y)")
    return out


def _spot_fluxes(sci: fits.Header, count: int) -> np.ndarray:
    out = np.full(count, np.nan)
    for c in range(count):
        values = [float(sci[f"SATF{c}_{k}"]) for k in range(4) if f"SATF{c}_{k}" in sci]
        values = [v for v in values if v > 0]
        if values:
            out[c] = np.mean(values)
    return out
