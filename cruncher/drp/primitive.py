"""Primitives: the steps of a recipe, one small class each, registered by their GPI names.

A primitive implements :meth:`Primitive.apply` (Template Method: :meth:`Primitive.__call__`
times it, logs it and records it in the product's history). ``level = "frame"`` primitives run
once per input frame; ``level = "sequence"`` ones run once with every frame of the recipe (dark
combination). Adding a primitive is adding one module under ``cruncher.drp.primitives`` with a
``@register`` class; the module is found automatically.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from cruncher.errors import PermanentError

if TYPE_CHECKING:
    from cruncher.drp.context import ReductionContext

_log = logging.getLogger(__name__)
REGISTRY: dict[str, type[Primitive]] = {}
_TRUE = {"1", "yes", "true", "on"}


class PrimitiveError(PermanentError):
    """A primitive cannot do its work on this input; the recipe fails with this reason."""


def register(cls: type[Primitive]) -> type[Primitive]:
    """Class decorator: make ``cls`` available to recipes under ``cls.name``."""
    key = cls.name.strip().lower()
    if key in REGISTRY and REGISTRY[key] is not cls:
        raise ValueError(f"two primitives are named {cls.name!r}")
    REGISTRY[key] = cls
    return cls


def load_primitives() -> dict[str, type[Primitive]]:
    """Import every module of :mod:`cruncher.drp.primitives` (they register themselves)."""
    from cruncher.drp import primitives

    for info in pkgutil.iter_modules(primitives.__path__):
        importlib.import_module(f"{primitives.__name__}.{info.name}")
    return REGISTRY


def lookup(name: str) -> type[Primitive]:
    """The primitive class named ``name`` (case-insensitive); PrimitiveError if none."""
    load_primitives()
    try:
        return REGISTRY[name.strip().lower()]
    except KeyError:
        raise PrimitiveError(f"unknown primitive {name!r}") from None


class Primitive:
    """One reduction step. Subclasses set ``name`` (and ``level``) and implement ``apply``."""

    name: ClassVar[str] = ""
    level: ClassVar[str] = "frame"

    def __init__(self, params: Mapping[str, str] | None = None) -> None:
        self.params = dict(params or {})

    def __call__(self, ctx: ReductionContext) -> None:
        if self.flag("Skip"):
            ctx.note(f"{self.name}: skipped")
            return
        start = time.perf_counter()
        self.apply(ctx)
        ctx.history.append(f"{self.name} ({time.perf_counter() - start:.2f} s)")

    def apply(self, ctx: ReductionContext) -> None:
        raise NotImplementedError

    # --- parameters (strings in the recipe) ------------------------------------------------------

    def text(self, key: str, default: str = "") -> str:
        for k, v in self.params.items():
            if k.lower() == key.lower():
                return str(v)
        return default

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.text(key, "")
        return default if value == "" else value.strip().lower() in _TRUE

    def number(self, key: str, default: float) -> float:
        value = self.text(key, "")
        try:
            return default if value == "" else float(value)
        except ValueError:
            raise PrimitiveError(f"{self.name}: parameter {key}={value!r} is not a number") from None
