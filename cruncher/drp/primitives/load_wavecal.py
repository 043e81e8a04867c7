"""Load Wavelength Calibration: the wavecal the frame is extracted with."""
from __future__ import annotations

from pathlib import Path

from cruncher.drp.primitive import Primitive, PrimitiveError, register
from cruncher.instruments.gpi.wavecal import Wavecal


def resolve_calibration(choice: str, directory: Path) -> Path:
    """An explicit CalibrationFile: absolute, or relative to the calibrations directory."""
    path = Path(choice).expanduser()
    path = path if path.is_absolute() else directory / path
    if not path.is_file():
        raise PrimitiveError(f"calibration file {path} does not exist")
    return path


@register
class LoadWavelengthCalibration(Primitive):
    """AUTOMATIC: the sequence's quick wavecal if there is one, else the nearest master.

    An arc frame is always measured against a master.
    """

    name = "Load Wavelength Calibration"

    def apply(self, ctx) -> None:
        frame = ctx.require_frame(self.name)
        choice = self.text("CalibrationFile", "AUTOMATIC")
        if choice.upper() == "AUTOMATIC":
            is_arc = str(frame.primary.get("OBSTYPE", "")).strip().upper() == "ARC"
            path = ctx.calibrations.best("wavecal", band=frame.band, mjd=frame.mjd,
                                         allow_quick=not is_arc)
        else:
            path = resolve_calibration(choice, ctx.calibrations.directory)
        wavecal = Wavecal.read(path)
        if wavecal.band != frame.band:
            raise PrimitiveError(f"wavecal {path.name} is for band {wavecal.band}, "
                                 f"the frame is {frame.band}")
        ctx.wavecal, ctx.wavecal_path = wavecal, path
        ctx.set_primary("DRPWVCLF", path.name, "wavelength calibration used")
        ctx.note(f"{self.name}: {path.name} ({wavecal.kind})")
