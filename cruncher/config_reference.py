"""The configuration reference, generated from the settings dataclasses.

``cruncher config --reference`` prints it and ``docs/configuration.md`` is its output, so the
reference cannot say anything the code does not: every key, its default (as it would be written in
``cruncher.toml``), its environment variable and its help text come from
:mod:`cruncher.config_schema`.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from cruncher.config import ENV_ALIASES, ENV_PREFIX
from cruncher.config_schema import SECTIONS

__all__ = ["REGENERATE", "env_var", "reference_markdown", "section_markdown", "toml_value"]

#: The command that writes ``docs/configuration.md``.
REGENERATE = "cruncher config --reference > docs/configuration.md"
#: Settings whose empty default is filled in from ``paths.root`` when the settings are loaded.
_DERIVED = ("paths.raw", "paths.reduced", "paths.queue", "paths.logs", "paths.calibrations",
            "database.url")

_INTRO = """\
# Configuration reference

<!-- Generated from cruncher/config_schema.py by `{regenerate}`; do not edit by hand. -->

Settings are layered, each layer overriding the one before:

1. the defaults below;
2. the configuration file, `cruncher.toml`, found at `--config FILE`, else `$CRUNCHER_CONFIG`,
   else `./cruncher.toml`, else `~/.config/cruncher/cruncher.toml` (none is required);
3. environment variables `CRUNCHER_<SECTION>_<KEY>` (for example `CRUNCHER_DRP_WORKERS=4`);
4. command-line flags: `--set SECTION.KEY=VALUE` on every command, and the flags a command has
   for its own settings (`--data-root`, `--db-url`, `cruncher backend --port`...).

In the file each section is a TOML table (`[drp]`, then `workers = 4`). In the environment and
with `--set` a value is text: numbers as usual, booleans as `true`/`false`, `yes`/`no`, `1`/`0`
or `on`/`off`, lists as comma-separated items. An unknown section or key, a value of the wrong
type, or one outside its allowed values is an error that names the key and where it came from.
`cruncher config` shows the effective value of every setting and which layer set it.

Secrets are never printed: `cruncher config` shows them as `******** (set)`, and a database
URL without its password. Keep them out of the file where you can: set them in the environment
(for a service, in its environment file).
{aliases}
"""


def _aliases_text() -> str:
    names = [f"`{var}` (`{name}`)" for var, name in ENV_ALIASES.items()]
    return (f"The Slack tokens may also be given as {' and '.join(names)};\n"
            "a `CRUNCHER_...` variable wins over them.")


def env_var(section: str, key: str) -> str:
    """The environment variable of ``section.key``: ``CRUNCHER_<SECTION>_<KEY>``."""
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def toml_value(value: Any) -> str:
    """``value`` written as a TOML value (strings quoted, lists in brackets)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(str(value))


def _default_cell(name: str, spec: dataclasses.Field) -> str:
    if name in _DERIVED and spec.default == "":
        return "derived from `paths.root`"
    return f"`{toml_value(spec.default)}`"


def _meaning(spec: dataclasses.Field) -> str:
    meta = spec.metadata
    text = meta["doc"]
    if meta["choices"]:
        text += " One of " + ", ".join(f"`{c}`" for c in meta["choices"]) + "."
    if meta["minimum"] is not None:
        text += f" At least {meta['minimum']:g}."
    if meta["secret"]:
        text += " Secret: shown masked."
    return _markdown_text(text)


def _markdown_text(text: str) -> str:
    """Plain help text made safe in a Markdown table (``<root>`` would vanish as an HTML tag)."""
    return text.replace("``", "`").replace("|", "\\|").replace("<", "\\<")


def section_markdown(section: str, cls: type) -> str:
    """One section of the reference: a heading, what the section is for, a table of its keys."""
    summary = _markdown_text((cls.__doc__ or "").strip().splitlines()[0])
    lines = [f"## `[{section}]`", "", summary, "",
             "| key | default | environment | meaning |", "|---|---|---|---|"]
    for spec in dataclasses.fields(cls):
        name = f"{section}.{spec.name}"
        lines.append(f"| `{spec.name}` | {_default_cell(name, spec)} | "
                     f"`{env_var(section, spec.name)}` | {_meaning(spec)} |")
    return "\n".join(lines) + "\n"


def reference_markdown() -> str:
    """The whole reference (Markdown, ending in a newline): the layering, then one table per
    section in declaration order."""
    parts = [_INTRO.format(regenerate=REGENERATE, aliases=_aliases_text())]
    parts += [section_markdown(section, cls) for section, cls in SECTIONS.items()]
    return "\n".join(parts)
