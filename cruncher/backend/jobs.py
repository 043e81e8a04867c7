"""PSF-subtraction jobs as the backend schedules them.

A job is (algorithm, dataset, parameters, input cubes). Its ``key`` says which jobs are the same
work: the queue refuses a job whose key is already waiting (latency in file syncing makes
duplicate quicklook jobs). ``priority`` orders the queue (smaller runs first):

0. quicklook cADI (realtime feedback at the telescope)
1. the first KLIP reduction of each dataset, and full cADI
2. other KLIP reductions
3. fake-planet injections and contrast curves

Within a priority, the instruction's own ``rank`` (larger first) and then arrival order (FIFO).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import IntEnum
from typing import Any


class Priority(IntEnum):
    QUICKLOOK = 0
    FIRST = 1
    REDUCTION = 2
    CALIBRATION = 3


#: Algorithm families; each has its own worker threads.
FAMILIES = ("cadi", "klip")


@dataclass(frozen=True, kw_only=True)
class PsfJob:
    """One PSF-subtraction, injection or contrast job."""

    id: str
    key: str
    algorithm: str
    family: str
    priority: Priority
    dataset: str
    outdir: str
    inputs: tuple[str, ...] = ()
    latest_inputs: bool = False
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    instruction_id: str | None = None
    rank: int = 0
    depends_on: tuple[str, ...] = ()
    timeout_s: float | None = None
    tries: int = 0
    not_before: float = 0.0

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown job family {self.family!r} (expected {', '.join(FAMILIES)})")
        object.__setattr__(self, "priority", Priority(self.priority))

    def to_json(self) -> str:
        data = asdict(self)
        data["priority"] = int(self.priority)
        data["inputs"] = list(self.inputs)
        data["depends_on"] = list(self.depends_on)
        data["params"] = dict(self.params)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PsfJob:
        data = json.loads(text)
        data["inputs"] = tuple(data.get("inputs", ()))
        data["depends_on"] = tuple(data.get("depends_on", ()))
        return cls(**data)

    def retried(self, not_before: float) -> PsfJob:
        """The same job for its next try, not to start before ``not_before`` (monotonic clock)."""
        return replace(self, tries=self.tries + 1, not_before=not_before)
