"""The GPI DRP recipe queue protocol (reference ``gpi-drp.md``, section 1).

A queue is one directory. A producer only ever writes ``NAME.waiting.xml`` into it; everything
after that is a rename in the same directory::

    NAME.waiting.xml  ->  NAME.working.xml  ->  NAME.done.xml  or  NAME.failed.xml
                      <-  (requeue: a supervisor gives a stuck recipe back)

The XML content never changes: the state of a recipe lives only in its file name, and every state
change is one ``os.rename`` (atomic within one filesystem). This is what lets the real IDL DRP and
cruncher's Python DRP be swapped by configuration, and what lets several Python DRP workers share
one queue: :func:`claim` is a rename that exactly one of them wins.

A recipe is written atomically (:func:`queue_recipe`): a hidden temporary file in the queue
directory, flushed to disk, then renamed to ``NAME.waiting.xml``, so a poller's glob never sees
half a file. Names are unique across all states: a name already in the queue, in any state, is
refused. The DRP runs waiting recipes in alphabetical order of name (:func:`waiting`); naming is
the only priority mechanism.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path

from cruncher.recipes.recipe import Recipe

_log = logging.getLogger(__name__)

WAITING = "waiting"
WORKING = "working"
DONE = "done"
FAILED = "failed"
#: Every state, in lifecycle order.
STATES = (WAITING, WORKING, DONE, FAILED)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STATE_IN_NAME = re.compile(r"\.(?:waiting|working|done|failed|xml)(?:\.|$)")
_MAX_NAME = 200
_FIND_ATTEMPTS = 3


def state_of(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(name, state)`` of a queue file such as ``NAME.waiting.xml``; ``None`` for anything else.

    Hidden files (the temporary files of an atomic write among them) and files without a state
    suffix are not queue entries.
    """
    filename = os.path.basename(os.fspath(path))
    if filename.startswith(".") or not filename.endswith(".xml"):
        return None
    name, _, state = filename[: -len(".xml")].rpartition(".")
    if not name or state not in STATES:
        return None
    return name, state


def path_for(queue_dir: str | os.PathLike[str], name: str, state: str) -> Path:
    """The path of recipe ``name`` in ``state``: ``queue_dir/NAME.STATE.xml``."""
    if state not in STATES:
        raise ValueError(f"unknown recipe state {state!r} (expected one of {', '.join(STATES)})")
    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise ValueError(f"{name!r} is not a recipe name")
    return Path(queue_dir, f"{name}.{state}.xml")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid name for a new recipe, else raise :class:`ValueError`.

    A valid name is 1 to 200 letters, digits and ``._-``, starting with a letter or digit, with no
    state suffix (``.waiting``, ``.done``, ... or ``.xml``) inside it.
    """
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > _MAX_NAME:
        raise ValueError(f"invalid recipe name {name!r}: use 1-{_MAX_NAME} letters, digits and "
                         f"._-, starting with a letter or digit")
    if _STATE_IN_NAME.search(name):
        raise ValueError(f"invalid recipe name {name!r}: it must not contain a state suffix "
                         f"({', '.join('.' + s for s in STATES)}, .xml)")
    return name


def find(queue_dir: str | os.PathLike[str], name: str) -> tuple[Path, str] | None:
    """Where recipe ``name`` is now and its state, or ``None`` if it is not in the queue.

    States are looked up in lifecycle order, so a recipe moving forward during the look-up is
    still found; the look-up is repeated a few times to catch one moving back (a requeue).
    """
    for _ in range(_FIND_ATTEMPTS):
        for state in STATES:
            path = path_for(queue_dir, name, state)
            if os.path.lexists(path):
                return path, state
    return None


def queue_recipe(queue_dir: str | os.PathLike[str], name: str,
                 recipe_or_text: Recipe | str | bytes) -> Path:
    """Write a recipe into the queue as ``NAME.waiting.xml``, atomically.

    Parameters
    ----------
    queue_dir
        The queue directory (it must exist).
    name
        The recipe's name, unique in this queue (see :func:`check_name`).
    recipe_or_text
        A :class:`~cruncher.recipes.recipe.Recipe` (written with ``to_xml()``), or XML text or
        bytes written as they are.

    Returns
    -------
    The path of the waiting recipe.

    Raises
    ------
    ValueError
        An invalid name.
    FileExistsError
        ``name`` is already in the queue, in any state; the error names the existing file.
    """
    check_name(name)
    data = _as_bytes(recipe_or_text)
    existing = find(queue_dir, name)
    if existing is not None:
        raise FileExistsError(f"recipe {name!r} is already queued ({existing[1]}): {existing[0]}")
    target = path_for(queue_dir, name, WAITING)
    temp = Path(queue_dir, f".{name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        # link() refuses an existing target, so two producers racing for one name cannot
        # overwrite each other (a rename would silently replace).
        os.link(temp, target)
    except FileExistsError:
        raise FileExistsError(f"recipe {name!r} is already queued: {target}") from None
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(queue_dir)
    _log.debug("queued recipe %s in %s", name, queue_dir)
    return target


def waiting(queue_dir: str | os.PathLike[str]) -> list[Path]:
    """The waiting recipes, in the DRP's pick-up order: alphabetical by name."""
    found = []
    with os.scandir(queue_dir) as entries:
        for entry in entries:
            parsed = state_of(entry.name)
            if parsed and parsed[1] == WAITING and entry.is_file():
                found.append((parsed[0], Path(entry.path)))
    return [path for _, path in sorted(found)]


def claim(path: str | os.PathLike[str]) -> Path | None:
    """Take a waiting recipe: rename ``NAME.waiting.xml`` to ``NAME.working.xml``.

    Returns
    -------
    The working path, or ``None`` if the recipe was no longer waiting (another worker claimed it
    first). Exactly one of several workers claiming the same recipe wins.
    """
    working = _moved(path, WAITING, WORKING)
    try:
        os.rename(path, working)
    except FileNotFoundError:
        return None
    _log.debug("claimed recipe %s", working)
    return working


def withdraw(queue_dir: str | os.PathLike[str], name: str) -> bool:
    """Take a waiting recipe back out of the queue; False if a worker has claimed it already.

    A claim renames the waiting file away, so exactly one of a claim and a withdrawal wins.
    """
    try:
        os.unlink(path_for(queue_dir, name, WAITING))
    except FileNotFoundError:
        return False
    _log.debug("withdrew recipe %s", name)
    return True


def finish(working_path: str | os.PathLike[str], ok: bool) -> Path:
    """Mark a working recipe ``done`` (``ok``) or ``failed``; returns the new path.

    Raises :class:`FileNotFoundError` if the recipe is no longer working (a supervisor requeued
    it meanwhile): its outcome then belongs to whoever runs it next.
    """
    final = _moved(working_path, WORKING, DONE if ok else FAILED)
    os.rename(working_path, final)
    return final


def requeue(working_path: str | os.PathLike[str]) -> Path:
    """Give a working recipe back to the queue (``.working.xml`` -> ``.waiting.xml``).

    Used by a supervisor for a recipe stuck in ``working``. Raises :class:`FileNotFoundError` if
    the recipe finished meanwhile.
    """
    back = _moved(working_path, WORKING, WAITING)
    os.rename(working_path, back)
    _log.info("requeued recipe %s", back)
    return back


# --- helpers ---------------------------------------------------------------------------------


def _moved(path: str | os.PathLike[str], expected: str, new: str) -> Path:
    """The path ``path`` (a recipe in state ``expected``) gets in state ``new``."""
    parsed = state_of(path)
    if parsed is None or parsed[1] != expected:
        raise ValueError(f"{os.fspath(path)} is not a {expected} recipe (NAME.{expected}.xml)")
    return path_for(os.path.dirname(os.fspath(path)), parsed[0], new)


def _as_bytes(recipe_or_text: Recipe | str | bytes) -> bytes:
    if isinstance(recipe_or_text, Recipe):
        recipe_or_text = recipe_or_text.to_xml()
    if isinstance(recipe_or_text, str):
        return recipe_or_text.encode("utf-8")
    if isinstance(recipe_or_text, bytes | bytearray):
        return bytes(recipe_or_text)
    raise TypeError(f"expected a Recipe, str or bytes, got {type(recipe_or_text).__name__}")


def _fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
