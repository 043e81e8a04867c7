"""What a recipe's primitives share while they reduce a frame: the reduction context."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from astropy.io import fits

from cruncher.drp.calibrations import CalibrationIndex
from cruncher.drp.drplog import DrpLog
from cruncher.drp.primitive import PrimitiveError
from cruncher.errors import BadInputError
from cruncher.instruments.fitsio import read_headers
from cruncher.instruments.gpi import keywords as kw
from cruncher.instruments.gpi.optics import DETECTOR_SIZE
from cruncher.recipes.recipe import Recipe

MIN_FINITE_FRACTION = 0.5


@dataclass
class RawFrame:
    """A raw 2-D frame: data in ADU (NaN where unusable), DQ flags and both headers."""

    path: Path
    data: np.ndarray
    dq: np.ndarray | None
    primary: fits.Header
    ext: fits.Header

    @property
    def stem(self) -> str:
        return kw.stem(self.path)

    def keyword(self, key: str) -> Any:
        for header in (self.ext, self.primary) if key in ("ITIME", "COADDS", "ITIME0") else (
                self.primary, self.ext):
            if key in header:
                return header[key]
        raise PrimitiveError(f"{self.path.name}: missing keyword {key}")

    @property
    def band(self) -> str:
        band = kw.band_from_filter(self.keyword("IFSFILT"))
        if band is None:
            raise PrimitiveError(f"{self.path.name}: unknown IFSFILT {self.keyword('IFSFILT')!r}")
        return band

    @property
    def itime(self) -> float:
        return float(self.keyword("ITIME"))

    @property
    def mjd(self) -> float:
        return float(self.keyword("MJD-OBS"))


def load_raw_frame(path: str | Path) -> RawFrame:
    """Read a raw frame, refusing truncated files, wrong shapes and frames with no data."""
    path = Path(path)
    headers = read_headers(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            index = 1 if len(hdul) > 1 and hdul[1].data is not None else 0
            data = hdul[index].data
            dq = hdul["DQ"].data if "DQ" in hdul else None
            data = None if data is None else np.array(data, dtype=np.float64)
            dq = None if dq is None else np.array(dq, dtype=np.uint8)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise BadInputError(str(path), f"cannot read the pixels: {exc}") from None
    if data is None or data.shape != (DETECTOR_SIZE, DETECTOR_SIZE):
        shape = None if data is None else data.shape
        raise BadInputError(str(path), f"wrong shape {shape}: a raw frame is "
                                       f"{DETECTOR_SIZE} x {DETECTOR_SIZE}")
    finite = np.isfinite(data)
    if finite.mean() < MIN_FINITE_FRACTION:
        raise BadInputError(str(path), f"only {100 * finite.mean():.0f}% of the pixels are "
                                       "finite (NaN-filled frame)")
    data[~finite] = np.nan
    if dq is not None and dq.shape != data.shape:
        dq = None
    return RawFrame(path=path, data=data, dq=dq, primary=headers[0],
                    ext=headers[1] if len(headers) > 1 else fits.Header())


@dataclass
class ReductionContext:
    """State handed from primitive to primitive for one frame (or one sequence of frames)."""

    recipe: Recipe
    recipe_name: str
    calibrations: CalibrationIndex
    log: DrpLog
    xp: ModuleType = np
    frame: RawFrame | None = None
    frames: list[RawFrame] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)
    wavecal: Any = None
    wavecal_path: Path | None = None
    plan: Any = None
    samples: Any = None
    cube: np.ndarray | None = None
    cube_dq: np.ndarray | None = None
    wavelengths: np.ndarray | None = None
    spots: Any = None
    spot_fluxes: np.ndarray | None = None
    filtered: np.ndarray | None = None
    primary_updates: dict[str, tuple[Any, str]] = field(default_factory=dict)
    ext_updates: dict[str, tuple[Any, str]] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    cube_product: Path | None = None
    written: list[Path] = field(default_factory=list)

    @property
    def output_dir(self) -> Path:
        return Path(self.recipe.output_dir)

    def require_frame(self, what: str) -> RawFrame:
        if self.frame is None:
            raise PrimitiveError(f"{what} needs a raw frame")
        return self.frame

    def require_cube(self, what: str) -> np.ndarray:
        if self.cube is None:
            raise PrimitiveError(f"{what} needs a datacube: put it after Interpolate Wavelength Axis")
        return self.cube

    def note(self, message: str) -> None:
        self.log.write(self.recipe_name, message)

    def set_ext(self, key: str, value: Any, comment: str = "") -> None:
        self.ext_updates[key] = (value, comment)

    def set_primary(self, key: str, value: Any, comment: str = "") -> None:
        self.primary_updates[key] = (value, comment)

    def output_path(self, suffix: str, frame: RawFrame | None = None) -> Path:
        """``<OutputDir>/<raw stem>_<suffix>.fits`` for ``frame`` (default: the current one)."""
        frame = frame or self.require_frame("naming a product")
        return self.output_dir / f"{frame.stem}_{suffix}.fits"

    def wrote(self, path: Path) -> None:
        self.written.append(path)
        self.log.product(self.recipe_name, path)
