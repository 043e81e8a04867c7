"""GPI DRP recipes: the XML model, the templates cruncher ships, and the queue protocol.

- :mod:`cruncher.recipes.recipe`: :class:`Recipe` and :class:`Primitive`, read from and written to
  GPI DRP recipe XML; :class:`RecipeError` for anything wrong with one.
- :mod:`cruncher.recipes.templates`: the shipped templates and :func:`make_recipe`.
- :mod:`cruncher.recipes.queue`: the ``NAME.waiting.xml`` -> ``working`` -> ``done|failed``
  queue directory protocol shared with the DRP.
"""
from __future__ import annotations

from cruncher.recipes.recipe import Primitive, Recipe, RecipeError
from cruncher.recipes.templates import TEMPLATES, load_template, make_recipe, recipe_name

__all__ = ["TEMPLATES", "Primitive", "Recipe", "RecipeError", "load_template", "make_recipe",
           "recipe_name"]
