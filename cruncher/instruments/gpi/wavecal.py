"""The GPI wavelength calibration: where each lenslet's microspectrum lies on the detector.

A wavecal holds five planes over the 281 x 281 lenslet grid (reference section 3):
``[Y0, X0, lambda0 (um), dispersion (um/pixel), tilt (rad)]``, NaN where a lenslet has no
spectrum. Pixel coordinates are 0-based pixel centres (``data[row, col]`` is at ``Y=row``,
``X=col``). Spectra run towards -Y: along the trace, at detector row ``Y``,

    lambda(Y) = lambda0 - dispersion * (Y - Y0) / cos(tilt)
    X(Y)      = X0 + (Y0 - Y) * tan(tilt)

A flexure shift ``(dx, dy)`` moves every trace by the same amount. Besides the planes, the file
records the width of a trace across the dispersion (``PSFSIGX``, Gaussian sigma in pixels), which
the extraction uses for its aperture correction, and for a quick wavecal the shift it applied
(``FLEXDX``, ``FLEXDY``) and the master it was derived from.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from cruncher.errors import BadInputError
from cruncher.instruments.gpi import keywords as kw
from cruncher.instruments.gpi.optics import CUBE_SIZE

PLANES = ("Y0", "X0", "LAMBDA0", "DISPERSION", "TILT")
FILETYPE = "Wavelength Solution Cal File"


@dataclass(frozen=True, kw_only=True)
class Wavecal:
    """A wavelength solution: the five planes, the band and the trace profile width."""

    planes: np.ndarray
    band: str
    psf_sigma_x: float
    kind: str = "master"
    shift: tuple[float, float] = (0.0, 0.0)
    mjd: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        if self.planes.shape != (5, CUBE_SIZE, CUBE_SIZE):
            raise ValueError(f"wavecal planes must be (5, {CUBE_SIZE}, {CUBE_SIZE}), "
                             f"got {self.planes.shape}")

    @property
    def y0(self) -> np.ndarray:
        return self.planes[0]

    @property
    def x0(self) -> np.ndarray:
        return self.planes[1]

    @property
    def lambda0(self) -> np.ndarray:
        return self.planes[2]

    @property
    def dispersion(self) -> np.ndarray:
        return self.planes[3]

    @property
    def tilt(self) -> np.ndarray:
        return self.planes[4]

    @property
    def valid(self) -> np.ndarray:
        """Lenslets that have a spectrum."""
        return np.all(np.isfinite(self.planes), axis=0)

    def shifted(self, dx: float, dy: float, *, kind: str | None = None) -> Wavecal:
        """The same solution with every trace moved by ``(dx, dy)`` pixels."""
        planes = self.planes.copy()
        planes[0] += dy
        planes[1] += dx
        return dataclasses.replace(self, planes=planes, kind=kind or self.kind,
                                   shift=(self.shift[0] + dx, self.shift[1] + dy))

    def lenslets(self) -> tuple[np.ndarray, np.ndarray]:
        """(iy, ix) of the lenslets with a spectrum, in row-major order."""
        return np.nonzero(self.valid)

    # --- files ---------------------------------------------------------------------------------

    def write(self, path: str | Path, *, extra: fits.Header | None = None) -> Path:
        path = Path(path)
        primary = fits.Header()
        primary["FILETYPE"] = (FILETYPE, "GPI calibration file type")
        primary["ISCALIB"] = ("YES", "a calibration file")
        primary["IFSFILT"] = (kw.FILTERS[self.band], "IFS filter")
        primary["MJD-OBS"] = (self.mjd, "MJD of the data it was derived from")
        if extra is not None:
            primary.extend(extra, update=True)
        sci = fits.Header()
        for i, name in enumerate(PLANES):
            sci[f"PLANE{i}"] = (name, "meaning of plane")
        sci["PSFSIGX"] = (self.psf_sigma_x, "trace profile sigma across dispersion (px)")
        sci["WAVECALT"] = (self.kind, "master or quick")
        sci["FLEXDX"] = (self.shift[0], "x shift applied to the master (px)")
        sci["FLEXDY"] = (self.shift[1], "y shift applied to the master (px)")
        sci["WCSOURCE"] = (self.source, "master wavecal this one derives from")
        hdus = fits.HDUList([fits.PrimaryHDU(header=primary),
                             fits.ImageHDU(self.planes.astype(np.float64), header=sci, name="SCI")])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        hdus.writeto(tmp, overwrite=True)
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: str | Path) -> Wavecal:
        try:
            with fits.open(path) as hdul:
                primary, sci = hdul[0].header, hdul[1].header
                planes = np.array(hdul[1].data, dtype=np.float64)
        except (OSError, IndexError, ValueError, TypeError) as exc:
            raise BadInputError(str(path), f"not a readable wavecal: {exc}") from None
        band = kw.band_from_filter(primary.get("IFSFILT"))
        if band is None or planes.shape != (5, CUBE_SIZE, CUBE_SIZE):
            raise BadInputError(str(path), "not a GPI wavecal (IFSFILT or plane shape wrong)")
        return cls(planes=planes, band=band, psf_sigma_x=float(sci.get("PSFSIGX", 0.5)),
                   kind=str(sci.get("WAVECALT", "master")),
                   shift=(float(sci.get("FLEXDX", 0.0)), float(sci.get("FLEXDY", 0.0))),
                   mjd=float(primary.get("MJD-OBS", 0.0)), source=str(sci.get("WCSOURCE", "")))


def trace_rows(y0: np.ndarray, lambda0: np.ndarray, dispersion: np.ndarray, tilt: np.ndarray,
               wavelength: np.ndarray | float) -> np.ndarray:
    """Detector row (continuous) where each lenslet's trace reaches ``wavelength``."""
    return y0 - (wavelength - lambda0) * np.cos(tilt) / dispersion


def trace_columns(x0: np.ndarray, y0: np.ndarray, tilt: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Detector column of each lenslet's trace centre at detector ``rows``."""
    return x0 + (y0 - rows) * np.tan(tilt)


def row_wavelengths(y0: np.ndarray, lambda0: np.ndarray, dispersion: np.ndarray,
                    tilt: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Wavelength along each lenslet's trace at (continuous) detector ``rows``."""
    return lambda0 - dispersion * (rows - y0) / np.cos(tilt)
