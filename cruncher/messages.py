"""Messages between instructors and backends: instructions, replies and events.

Everything that crosses a network interface (websocket, MPI, in-process queue) is one of these
frozen dataclasses serialised as a JSON object. Instructions are validated strictly: an unknown
field, a wrong type, a relative path, an empty file list or an unknown mode raises
:class:`InstructionError` naming the field, and nothing else.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from cruncher.errors import ValidationError

#: Version of the instruction schema; a message from a newer schema is refused.
SCHEMA_VERSION = 1
LEVELS = ("raw", "cube")
MODES = ("spec", "pol", "cal")
PSFSUB_ALGORITHMS = ("cadi", "klip", "contrast")
BANDS = ("Y", "J", "H", "K1", "K2")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_MAX_PRIORITY = 1_000_000


class InstructionError(ValidationError):
    """An instruction failed validation; ``field`` names the offending field."""


@dataclass(frozen=True, kw_only=True)
class Instruction:
    """What an instructor asks a backend to do with a set of files.

    Parameters
    ----------
    files
        Absolute paths of the inputs: raw 2-D frames or 3-D cubes, per ``level``.
    outdir
        Absolute directory the products go to.
    level
        ``raw`` (2-D frames, reduced by the DRP first) or ``cube`` (datacubes).
    mode
        ``spec``, ``pol`` or ``cal``.
    quicklook
        Run a quicklook cADI on the cubes available so far instead of waiting for the sequence.
    psfsub
        Which PSF-subtraction families to run: a subset of ``cadi``, ``klip``, ``contrast``.
    priority
        Larger runs earlier among otherwise equal work.
    target, band
        The target (OBJECT) and band, when the instructor knows them.
    params
        Free-form parameters for the algorithms (a JSON object).
    force
        Redo work even if the journal says it was done.
    id
        A stable identifier; when omitted it is derived from the content, so the same instruction
        sent twice has the same id.
    """

    files: tuple[str, ...]
    outdir: str
    level: str = "raw"
    mode: str = "spec"
    quicklook: bool = False
    psfsub: tuple[str, ...] = ()
    priority: int = 0
    target: str | None = None
    band: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    force: bool = False
    id: str = ""
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            value = check(name, getattr(self, name))
            object.__setattr__(self, name, value)
        if self.mode == "cal" and self.psfsub:
            raise InstructionError("psfsub", "calibration frames get no PSF subtraction")
        if not self.id:
            object.__setattr__(self, "id", content_id(self))

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies, and this runs for every message.
        data = {name: getattr(self, name) for name in _FIELD_ORDER}
        data["files"] = list(self.files)
        data["psfsub"] = list(self.psfsub)
        data["params"] = dict(self.params)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Instruction:
        """Parse and validate one instruction; raise :class:`InstructionError` on any problem."""
        return cls.from_dict(parse_json_object(text, InstructionError))

    @classmethod
    def from_dict(cls, data: Any) -> Instruction:
        if not isinstance(data, dict):
            raise InstructionError("<message>", f"expected a JSON object, got {_json_type(data)}")
        unknown = sorted(set(data) - _FIELD_NAMES)
        if unknown:
            raise InstructionError(unknown[0] or "\"\"", "unknown field")
        for required in ("files", "outdir"):
            if required not in data:
                raise InstructionError(required, "missing")
        return cls(**data)


def content_id(instruction: Instruction) -> str:
    """A deterministic id for an instruction: a hash of everything but its id."""
    data = instruction.to_dict()
    del data["id"]
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, allow_nan=False).encode("utf-8",
                            "surrogatepass")).hexdigest()
    return f"i-{digest[:20]}"


# --- field checks: each takes (name, value) and returns the normalised value -----------------


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", tuple: "array", str: "string", bool: "boolean",
             int: "integer", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _expect(name: str, value: Any, kinds: tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise InstructionError(name, f"expected {what}, got {_json_type(value)}")


def _absolute_path(name: str, value: Any) -> str:
    _expect(name, value, (str,), "a string path")
    if not value or "\x00" in value:
        raise InstructionError(name, "empty path or NUL character")
    if not os.path.isabs(value):
        raise InstructionError(name, f"path must be absolute, got {value!r}")
    return value


def _files(name: str, value: Any) -> tuple[str, ...]:
    _expect(name, value, (list, tuple), "an array of absolute paths")
    if not value:
        raise InstructionError(name, "the file list is empty")
    paths = tuple(_absolute_path(name, v) for v in value)
    if len(set(paths)) != len(paths):
        raise InstructionError(name, "a file is listed twice")
    return paths


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        _expect(name, value, (str,), "a string")
        if value not in options:
            raise InstructionError(name, f"unknown value {value!r} (expected one of "
                                         f"{', '.join(options)})")
        return value
    return check


def _flag(name: str, value: Any) -> bool:
    _expect(name, value, (bool,), "true or false")
    return value


def _psfsub(name: str, value: Any) -> tuple[str, ...]:
    _expect(name, value, (list, tuple), f"an array of {', '.join(PSFSUB_ALGORITHMS)}")
    chosen = tuple(_choice(PSFSUB_ALGORITHMS)(name, v) for v in value)
    if len(set(chosen)) != len(chosen):
        raise InstructionError(name, "an algorithm is listed twice")
    return chosen


def _priority(name: str, value: Any) -> int:
    _expect(name, value, (int,), "an integer")
    if abs(value) > _MAX_PRIORITY:
        raise InstructionError(name, f"must lie within +-{_MAX_PRIORITY}")
    return value


def _optional_text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    _expect(name, value, (str,), "a string or null")
    if not value.strip() or len(value) > 200:
        raise InstructionError(name, "must be 1 to 200 characters")
    return value


def _band(name: str, value: Any) -> str | None:
    return None if value is None else _choice(BANDS)(name, value)


def _params(name: str, value: Any) -> dict[str, Any]:
    _expect(name, value, (dict, Mapping), "a JSON object")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InstructionError(name, f"not representable as JSON: {exc}") from None
    return dict(value)


def _id(name: str, value: Any) -> str:
    _expect(name, value, (str,), "a string")
    if value and not _ID_PATTERN.match(value):
        raise InstructionError(name, "must be 1-128 characters of letters, digits and ._:-, "
                                     "starting with a letter or digit")
    return value


def _schema(name: str, value: Any) -> int:
    _expect(name, value, (int,), "an integer")
    if not 1 <= value <= SCHEMA_VERSION:
        raise InstructionError(name, f"schema version {value} is not supported "
                                     f"(this cruncher speaks 1..{SCHEMA_VERSION})")
    return value


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "files": _files,
    "outdir": _absolute_path,
    "level": _choice(LEVELS),
    "mode": _choice(MODES),
    "quicklook": _flag,
    "psfsub": _psfsub,
    "priority": _priority,
    "target": _optional_text,
    "band": _band,
    "params": _params,
    "force": _flag,
    "id": _id,
    "schema": _schema,
}
_FIELD_ORDER = tuple(f.name for f in fields(Instruction))
_FIELD_NAMES = frozenset(_FIELD_ORDER)


def parse_json_object(text: str | bytes, error: type[ValidationError]) -> Any:
    """Decode strict JSON (no NaN/Infinity); any failure becomes ``error("<message>", ...)``."""
    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        if isinstance(text, bytes | bytearray):
            text = text.decode("utf-8")
        if not isinstance(text, str):
            raise TypeError(f"expected text, got {type(text).__name__}")
        return json.loads(text, parse_constant=refuse_constant)
    except (ValueError, TypeError, RecursionError) as exc:
        raise error("<message>", f"not valid JSON: {exc}") from None


# --- replies -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A backend's answer to one instruction: ``accepted`` with a job id, or ``rejected``.

    ``duplicate`` says the same instruction was accepted before (its work is not redone) and
    ``state`` what the journal says of it; ``dropped`` lists files left out as marked bad.
    """

    status: str
    instruction_id: str | None = None
    job_id: str | None = None
    reason: str | None = None
    duplicate: bool = False
    dropped: tuple[str, ...] = ()
    state: str | None = None

    def to_json(self) -> str:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["dropped"] = list(self.dropped)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Reply:
        data = parse_json_object(text, ValidationError)
        if not isinstance(data, dict) or data.get("status") not in ("accepted", "rejected"):
            raise ValidationError("status", "a reply needs status accepted or rejected")
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["dropped"] = tuple(data.get("dropped") or ())
        return cls(**data)


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Event:
    """Something that happened in a backend, for status displays, the chatbot and logs."""

    type: ClassVar[str] = "event"
    job_id: str
    time: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps({"type": self.type, **_jsonable(asdict(self))}, allow_nan=False,
                          separators=(",", ":"))


@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    """A job advanced: ``done`` of ``total`` units of ``stage``."""

    type: ClassVar[str] = "progress"
    stage: str
    done: int
    total: int
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class ProductReady(Event):
    """A product was written and recorded."""

    type: ClassVar[str] = "product"
    kind: str
    path: str
    target: str | None = None
    band: str | None = None
    mode: str | None = None
    date: str | None = None
    grade: str = "science"
    inputs: tuple[str, ...] = ()
    extras: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, kw_only=True)
class Failure(Event):
    """Work failed; ``retryable`` tells whether it will be tried again."""

    type: ClassVar[str] = "failure"
    stage: str
    reason: str
    retryable: bool = False
    files: tuple[str, ...] = ()
    sequence: str | None = None


@dataclass(frozen=True, kw_only=True)
class InstructionFinished(Event):
    """All the work of an instruction has ended (``job_id`` is the instruction's id)."""

    type: ClassVar[str] = "finished"
    state: str
    summary: Mapping[str, Any] = field(default_factory=dict, hash=False)


EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in (Progress, ProductReady, Failure,
                                                                 InstructionFinished)}


def event_from_json(text: str | bytes) -> Event:
    """Decode an event of any registered type; unknown fields are ignored for forward compatibility."""
    data = parse_json_object(text, ValidationError)
    if not isinstance(data, dict) or data.get("type") not in EVENT_TYPES:
        raise ValidationError("type", f"unknown event type (known: {', '.join(EVENT_TYPES)})")
    cls = EVENT_TYPES[data.pop("type")]
    known = {f.name: f for f in fields(cls)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValidationError("<message>", str(exc)) from None


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
