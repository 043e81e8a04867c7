"""Reading FITS headers safely: complete files only, clear reasons otherwise.

A raw frame may be looked at while a sync tool is still writing it, or may have been cut short
for good. Both look the same on disk (fewer bytes than the headers promise); the difference is
age. A recently modified short file is reported as :class:`FileNotReadyError` (try again), an old
one as :class:`BadInputError`.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

from astropy.io import fits

from cruncher.errors import BadInputError, FileNotReadyError

#: A short file modified more recently than this is presumed still being written.
STILL_WRITING_S = 60.0
_TRUNCATION_HINTS = ("truncated", "Error validating header", "END card")


def read_headers(path: str | Path, *, check_complete: bool = True) -> list[fits.Header]:
    """Every HDU header of ``path``, without reading pixel data.

    Raises
    ------
    FileNotReadyError
        The file is shorter than its headers promise and was modified moments ago.
    BadInputError
        Not a FITS file, a damaged header, or a file cut short long ago.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise BadInputError(str(path), f"cannot read: {exc.strerror or exc}") from None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, lazy_load_hdus=True, memmap=False) as hdul:
                headers = [hdu.header.copy() for hdu in hdul]
                ends = [_data_end(hdu) for hdu in hdul]
    except (OSError, ValueError, IndexError, KeyError, TypeError, EOFError) as exc:
        raise _short_or_bad(path, stat, f"not a readable FITS file: {exc}") from None
    problems = [str(w.message).splitlines()[0] for w in caught
                if any(h in str(w.message) for h in _TRUNCATION_HINTS)]
    if check_complete and not path.name.endswith(".gz"):
        expected = max(ends)
        if stat.st_size < expected:
            problems.insert(0, f"truncated: {stat.st_size} bytes on disk, headers promise {expected}")
    if problems:
        raise _short_or_bad(path, stat, problems[0])
    return headers


def _data_end(hdu: fits.hdu.base._BaseHDU) -> int:
    """Byte offset where ``hdu``'s data ends, without the FITS block padding."""
    header = hdu.header
    naxis = [header.get(f"NAXIS{i}", 0) for i in range(1, header.get("NAXIS", 0) + 1)]
    count = 0
    if naxis:
        count = 1
        for n in naxis:
            count *= n
    nbytes = abs(header.get("BITPIX", 8)) // 8 * header.get("GCOUNT", 1) * (
        header.get("PCOUNT", 0) + count)
    return hdu.fileinfo()["datLoc"] + nbytes


def _short_or_bad(path: Path, stat, reason: str) -> Exception:
    if time.time() - stat.st_mtime < STILL_WRITING_S:
        return FileNotReadyError(f"{path}: {reason} (modified {time.time() - stat.st_mtime:.0f} s "
                                 "ago; probably still being written)")
    return BadInputError(str(path), reason)


def header_value(headers: list[fits.Header], key: str, *, prefer: int = 0):
    """``key`` from header ``prefer`` if present there, else from the first header that has it."""
    order = [prefer] + [i for i in range(len(headers)) if i != prefer]
    for i in order:
        if i < len(headers) and key in headers[i]:
            return headers[i][key]
    return None
