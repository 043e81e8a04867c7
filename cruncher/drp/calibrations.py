"""The calibration index: which darks, wavecals and bad-pixel maps exist, and which fits a frame.

``CalibrationFile="AUTOMATIC"`` asks for the best calibration of a kind: a dark of the same
exposure time nearest in time; a wavecal of the same band, the sequence's quick wavecal (from its
arc snapshot, within ``QUICK_WAVECAL_DAYS``) if there is one, else the nearest master; the
nearest bad-pixel map or distortion solution. The index is a JSON file in the calibrations
directory itself, so it works on a supercomputer node with no database; several DRP workers
update it under a file lock, and it can always be rebuilt by scanning the directory's headers.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from astropy.io import fits

from cruncher.errors import PermanentError
from cruncher.instruments.gpi import keywords as kw

_log = logging.getLogger(__name__)
INDEX_NAME = "index.json"
LOCK_NAME = ".index.lock"
QUICK_WAVECAL_DAYS = 0.25
#: FILETYPE of each calibration kind, as the GPI DRP writes it.
FILETYPES = {
    "Dark File": "dark",
    "Wavelength Solution Cal File": "wavecal",
    "Bad Pixel Map": "badpix",
    "Distortion Measurement": "distortion",
}


class MissingCalibrationError(PermanentError):
    """No calibration of the kind a primitive needs fits the frame."""


@dataclass(frozen=True, kw_only=True)
class CalEntry:
    """One calibration file as the index knows it (``path`` relative to the directory)."""

    path: str
    kind: str
    band: str | None = None
    itime: float | None = None
    mjd: float = 0.0
    quick: bool = False

    @classmethod
    def from_file(cls, path: Path, directory: Path) -> CalEntry | None:
        """The entry of a calibration file, or ``None`` if it is not one."""
        try:
            with fits.open(path, lazy_load_hdus=True) as hdul:
                primary = hdul[0].header
                ext = hdul[1].header if len(hdul) > 1 else fits.Header()
        except (OSError, ValueError, IndexError):
            return None
        kind = FILETYPES.get(str(primary.get("FILETYPE", "")).strip())
        if kind is None:
            return None
        itime = ext.get("ITIME", primary.get("ITIME"))
        return cls(path=os.path.relpath(path, directory), kind=kind,
                   band=kw.band_from_filter(primary.get("IFSFILT")),
                   itime=float(itime) if itime is not None else None,
                   mjd=float(primary.get("MJD-OBS", 0.0)),
                   quick=str(ext.get("WAVECALT", "")).strip() == "quick")


class CalibrationIndex:
    """The calibrations under one directory."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @property
    def index_path(self) -> Path:
        return self.directory / INDEX_NAME

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / LOCK_NAME, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def entries(self) -> list[CalEntry]:
        """Every indexed calibration; the index is built by scanning if it does not exist."""
        try:
            data = json.loads(self.index_path.read_text())
            return [CalEntry(**item) for item in data["calibrations"]]
        except FileNotFoundError:
            return self.rebuild()
        except (ValueError, KeyError, TypeError):
            _log.warning("calibration index %s is damaged; rebuilding it", self.index_path)
            return self.rebuild()

    def rebuild(self) -> list[CalEntry]:
        """Scan the directory's FITS headers and write a fresh index."""
        with self._locked():
            found = [entry for path in sorted(self.directory.glob("**/*.fits"))
                     if (entry := CalEntry.from_file(path, self.directory)) is not None]
            self._write(found)
        _log.info("calibration index rebuilt: %d files in %s", len(found), self.directory)
        return found

    def add(self, path: str | Path) -> CalEntry:
        """Index a calibration just written (replacing an entry for the same file)."""
        path = Path(path)
        entry = CalEntry.from_file(path, self.directory)
        if entry is None:
            raise ValueError(f"{path} is not a calibration file (FILETYPE unknown)")
        with self._locked():
            current = [e for e in self._read_unlocked() if e.path != entry.path]
            self._write(current + [entry])
        return entry

    def add_if_inside(self, path: str | Path) -> bool:
        """Index ``path`` if it lies in the calibrations directory; tell whether it did."""
        try:
            Path(path).resolve().relative_to(self.directory.resolve())
        except ValueError:
            return False
        self.add(path)
        return True

    def _read_unlocked(self) -> list[CalEntry]:
        try:
            return [CalEntry(**i) for i in json.loads(self.index_path.read_text())["calibrations"]]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return [e for p in sorted(self.directory.glob("**/*.fits"))
                    if (e := CalEntry.from_file(p, self.directory)) is not None]

    def _write(self, entries: list[CalEntry]) -> None:
        tmp = self.index_path.with_name(f".{INDEX_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"calibrations": [asdict(e) for e in entries]}, indent=1))
        tmp.replace(self.index_path)

    # --- selection ------------------------------------------------------------------------------

    def best(self, kind: str, *, mjd: float, band: str | None = None, itime: float | None = None,
             allow_quick: bool = True) -> Path:
        """The calibration of ``kind`` that best fits a frame; raises MissingCalibrationError."""
        found = self.find(kind, mjd=mjd, band=band, itime=itime, allow_quick=allow_quick)
        if found is None:
            wanted = ", ".join(f"{k}={v}" for k, v in (("band", band), ("ITIME", itime)) if v)
            raise MissingCalibrationError(f"no {kind} calibration{' with ' + wanted if wanted else ''}"
                                          f" in {self.directory}")
        return found

    def find(self, kind: str, *, mjd: float, band: str | None = None, itime: float | None = None,
             allow_quick: bool = True) -> Path | None:
        candidates = [e for e in self.entries() if e.kind == kind]
        if kind == "dark" and itime is not None:
            candidates = [e for e in candidates if e.itime is not None
                          and abs(e.itime - itime) <= 1e-3 * itime + 0.01]
        if kind == "wavecal":
            candidates = [e for e in candidates if e.band == band]
            quick = [e for e in candidates if e.quick and abs(e.mjd - mjd) <= QUICK_WAVECAL_DAYS]
            candidates = quick if (allow_quick and quick) else [e for e in candidates if not e.quick]
        candidates = [e for e in candidates if (self.directory / e.path).exists()]
        if not candidates:
            return None
        best = min(candidates, key=lambda e: abs(e.mjd - mjd))
        return self.directory / best.path
