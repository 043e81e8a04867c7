"""The recipe templates cruncher ships, and filling them in for a set of files.

A template is a recipe with an empty dataset (``cruncher/recipes/templates/*.xml``, installed as
package data). :func:`make_recipe` fills in the dataset and any parameter overrides;
:func:`recipe_name` gives the result a queue name.

=====================  ===============  ==================================================
template               ShortName        what it makes
=====================  ===============  ==================================================
``quickcube``          quickcube        a quicklook spectral datacube from one raw frame
``spectral_science``   spdc             the GPIES spectral datacube chain (paper, Table 1)
``dark``               dark             a master dark from a sequence of darks
``quick_wavecal``      quickwavecal     a flexure update of the wavecal from an arc snapshot
=====================  ===============  ==================================================
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from cruncher.recipes.recipe import Primitive, Recipe, RecipeError

#: The templates shipped with cruncher, by file stem.
TEMPLATES = ("dark", "quick_wavecal", "quickcube", "spectral_science")
_FITS_SUFFIXES = (".fits.gz", ".fits.fz", ".fits", ".fit")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 200


@cache
def _template_text(stem: str) -> str:
    return resources.files("cruncher.recipes").joinpath("templates", f"{stem}.xml").read_text(
        encoding="utf-8")


@cache
def _short_names() -> dict[str, str]:
    return {Recipe.from_xml(_template_text(stem), require_inputs=False).short_name: stem
            for stem in TEMPLATES}


def load_template(short_name: str) -> Recipe:
    """A shipped template, by file stem (``spectral_science``) or ShortName (``spdc``).

    Raises
    ------
    RecipeError
        For a name that is neither.
    """
    stem = short_name if short_name in TEMPLATES else _short_names().get(short_name)
    if stem is None:
        raise RecipeError(f"unknown recipe template {short_name!r} (available: "
                          f"{', '.join(TEMPLATES)})", f"<template {short_name}>")
    return Recipe.from_xml(_template_text(stem), path=f"<template {stem}>", require_inputs=False)


def make_recipe(template: str | Recipe, files: Sequence[str | os.PathLike[str]],
                output_dir: str | os.PathLike[str], *, input_dir: str | os.PathLike[str] | None = None,
                overrides: Mapping[str, Mapping[str, str | None]] | None = None) -> Recipe:
    """Fill a template's dataset with ``files`` and apply parameter ``overrides``.

    Parameters
    ----------
    template
        A template name (see :func:`load_template`) or a :class:`Recipe` to start from.
    files
        The inputs: absolute paths, or paths relative to ``input_dir`` when that is given.
    output_dir
        Where the DRP writes the products (made absolute).
    input_dir
        The dataset's InputDir. By default, the directory holding the files, which must then be
        one and the same for all of them. When given, every file must lie inside it (a file in a
        sub-directory gets a ``FileName`` with that sub-directory).
    overrides
        ``{primitive name: {parameter: value}}``; applies to every primitive of that name. A value
        of ``None`` removes the parameter. Naming a primitive the template lacks is an error.

    Raises
    ------
    RecipeError
        No files, files from different directories, a file outside ``input_dir``, an override for
        a primitive the template lacks.
    """
    base = load_template(template) if isinstance(template, str) else template
    if isinstance(files, str | os.PathLike) or not files:
        raise RecipeError("a recipe needs at least one input file (a sequence of paths)")
    in_dir, names = _dataset(files, input_dir)
    return dataclasses.replace(base, input_dir=in_dir, output_dir=os.path.abspath(output_dir),
                               files=names, primitives=_override(base, overrides or {}))


def recipe_name(recipe: Recipe, *, prefix: str = "") -> str:
    """A queue name for ``recipe``: ``f"{prefix}{ShortName}_{stem of the first input}"``.

    For example ``quickcube_S20131118S0064`` or, with ``prefix="001_"``, ``001_spdc_S20131118S0064``.
    The DRP picks recipes up in alphabetical order of name, so recipes of one kind run in the
    order of their first frame (GPI file names sort by date and frame number); a ``prefix`` such
    as a zero-padded number, or a time stamp, orders recipes of different kinds. Characters other
    than letters, digits and ``._-`` become ``_``, so the result is a valid queue name (see
    :func:`cruncher.recipes.queue.queue_recipe`) for any valid prefix. The name is not unique by
    itself: two recipes of one kind starting with the same frame get the same name, and the queue
    refuses the second; add a distinguishing prefix where that can happen.
    """
    short = recipe.short_name or "recipe"
    parts = [short]
    if recipe.files:
        first = Path(recipe.files[0]).name
        for suffix in _FITS_SUFFIXES:
            if first.lower().endswith(suffix):
                first = first[: -len(suffix)]
                break
        parts.append(first)
    name = _UNSAFE.sub("_", prefix + "_".join(parts))[:_MAX_NAME].strip("._-")
    return name or "recipe"


# --- helpers ---------------------------------------------------------------------------------


def _dataset(files: Sequence[str | os.PathLike[str]],
             input_dir: str | os.PathLike[str] | None) -> tuple[str, tuple[str, ...]]:
    """The InputDir and the FileName values for ``files``."""
    if input_dir is None:
        paths = [Path(os.path.abspath(f)) for f in files]
        parents = sorted({str(p.parent) for p in paths})
        if len(parents) > 1:
            raise RecipeError(f"the input files are in {len(parents)} directories "
                              f"({', '.join(parents[:3])}{', ...' if len(parents) > 3 else ''}); "
                              f"a recipe reads one InputDir")
        return parents[0], tuple(p.name for p in paths)
    root = Path(os.path.abspath(input_dir))
    names = []
    for given in files:
        path = Path(os.path.abspath(root / given))
        try:
            names.append(path.relative_to(root).as_posix())
        except ValueError:
            raise RecipeError(f"input file {os.fspath(given)!r} is not inside InputDir {root}") from None
    return str(root), tuple(names)


def _override(base: Recipe, overrides: Mapping[str, Mapping[str, str | None]]) -> tuple[Primitive, ...]:
    missing = sorted(set(overrides) - set(base.primitive_names))
    if missing:
        raise RecipeError(f"cannot override {missing[0]!r}: recipe {base.short_name!r} has no such "
                          f"primitive (it has: {', '.join(base.primitive_names)})")
    steps = []
    for step in base.primitives:
        changes = overrides.get(step.name)
        if changes:
            params = {**step.params, **changes}
            params = {k: v for k, v in params.items() if v is not None}
            step = Primitive(name=step.name, params=params)
        steps.append(step)
    return tuple(steps)
