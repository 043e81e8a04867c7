"""Path prefixes rewritten where the same data sit under another directory (a cluster's scratch
space, products copied back home)."""
from __future__ import annotations

from collections.abc import Mapping


def remap(path: str, prefixes: Mapping[str, str]) -> str:
    """``path`` with the first matching ``old`` prefix (a whole directory) replaced by ``new``."""
    for old, new in prefixes.items():
        old = old.rstrip("/")
        if path == old or path.startswith(old + "/"):
            return new.rstrip("/") + path[len(old):]
    return path


def parse(pairs: list[str]) -> dict[str, str]:
    """``["OLD=NEW", ...]`` from the command line."""
    from cruncher.errors import ValidationError

    out = {}
    for text in pairs:
        old, sep, new = text.partition("=")
        if not sep or not old or not new:
            raise ValidationError("--map", f"{text!r}: expected OLD=NEW")
        out[old] = new
    return out
