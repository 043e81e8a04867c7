"""Land raw files in a watched directory the way a night's transfers do (tests, benchmarks and
``cruncher demo``).

Two ways files arrive at a data-reduction machine:

- ``rename``: written under a temporary name in the same directory, then renamed (rsync, ``scp``
  to a temporary name, Dropbox); the watcher sees a move.
- ``slow``: written in place in chunks with pauses, as a slow network copy or the instrument's own
  writer does; the watcher sees a growing file, then its close.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

WAYS = ("rename", "slow")


def land(source: Path, night_dir: Path, how: str, *, chunks: int = 4,
         pause_s: float = 0.2) -> Path:
    """Land ``source`` in ``night_dir`` (created if needed) by ``how``; return its new path."""
    night_dir.mkdir(parents=True, exist_ok=True)
    target = night_dir / source.name
    if how == "rename":
        partial = night_dir / f".{source.name}.part"
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    elif how == "slow":
        data = source.read_bytes()
        step = -(-len(data) // chunks)
        with open(target, "wb") as out:
            for start in range(0, len(data), step):
                out.write(data[start:start + step])
                out.flush()
                time.sleep(pause_s)
    else:
        raise ValueError(f"how={how!r}: expected one of {', '.join(WAYS)}")
    return target


def stream(sources: Iterable[Path], raw_root: Path, *, interval_s: float = 0.3,
           ways: tuple[str, ...] = WAYS, before: Callable[[int, Path], None] | None = None,
           landed: Callable[[Path, float], None] | None = None) -> list[Path]:
    """Land ``sources`` one after the other under ``raw_root/<night>/`` (the source's directory
    name), taking turns through ``ways``. ``before(i, source)`` runs before each file (e.g. to
    kill a scanner mid-night); ``landed(path, closed_at)`` after, with ``time.time()`` of the
    moment the file became complete."""
    paths = []
    for i, source in enumerate(sources):
        if before is not None:
            before(i, source)
        path = land(source, raw_root / source.parent.name, ways[i % len(ways)])
        if landed is not None:
            landed(path, time.time())
        paths.append(path)
        time.sleep(interval_s)
    return paths
