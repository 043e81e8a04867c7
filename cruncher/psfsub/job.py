"""The job file a PSF-subtraction subprocess reads, and the result file it writes."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cruncher.errors import BadInputError


@dataclass(frozen=True, kw_only=True)
class JobFile:
    """What a job is asked to do."""

    id: str
    algorithm: str
    inputs: tuple[str, ...]
    outdir: str
    result: str
    params: Mapping[str, Any] = field(default_factory=dict)
    tries: int = 0

    def write(self, path: str | Path) -> Path:
        data = asdict(self)
        data["inputs"] = list(self.inputs)
        data["params"] = dict(self.params)
        return _write_json(Path(path), data)

    @classmethod
    def read(cls, path: str | Path) -> JobFile:
        try:
            data = json.loads(Path(path).read_text())
            data["inputs"] = tuple(data["inputs"])
            return cls(**data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadInputError(str(path), f"not a readable job file: {exc}") from None


@dataclass(kw_only=True)
class Product:
    """One file a job made: its kind (``cadi``, ``klip_general``...) and what it came from."""

    path: str
    kind: str
    grade: str = "science"
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Result:
    """What a job reports: products, figures, timings and anything else worth recording."""

    job_id: str
    products: list[Product] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def write(self, path: str | Path) -> Path:
        return _write_json(Path(path), asdict(self))

    @classmethod
    def read(cls, path: str | Path) -> Result:
        data = json.loads(Path(path).read_text())
        data["products"] = [Product(**p) for p in data.get("products", [])]
        return cls(**data)


def _write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)
    return path
