"""Settings: defaults < ``cruncher.toml`` < environment ``CRUNCHER_<SECTION>_<KEY>`` < CLI flags.

One frozen :class:`Settings` object carries every tunable of cruncher. Each value remembers where
it came from, so ``cruncher config`` can say why a setting has the value it has. The sections and
their keys are the dataclasses below; their field metadata (``doc``, ``choices``, ``secret``,
``minimum``) drives validation, masking and the configuration reference that
:mod:`cruncher.config_reference` generates.

The configuration file is found, in order, at ``--config``, ``$CRUNCHER_CONFIG``,
``./cruncher.toml`` and ``~/.config/cruncher/cruncher.toml``; none is required. The sections and
keys themselves are declared in :mod:`cruncher.config_schema`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cruncher.config_schema import (SECTIONS, BackendSettings, ChatSettings, ComputeSettings,
                                    DatabaseSettings, DrpSettings, LoggingSettings, PathSettings,
                                    PsfSubSettings, RealtimeSettings, setting)
from cruncher.errors import ConfigError, OutsideDataRootError

__all__ = ["SECTIONS", "Settings", "SettingInfo", "load_settings", "mask_url", "setting",
           "BackendSettings", "ChatSettings", "ComputeSettings", "DatabaseSettings",
           "DrpSettings", "LoggingSettings", "PathSettings", "PsfSubSettings", "RealtimeSettings"]

ENV_PREFIX = "CRUNCHER_"
#: Environment variables with the prefix that are not settings themselves.
RESERVED_ENV = ("CRUNCHER_CONFIG", "CRUNCHER_TEST_", "CRUNCHER_REQUIRE_")
DEFAULT_SOURCE = "default"


@dataclass(frozen=True, kw_only=True)
class SettingInfo:
    """One setting as ``cruncher config`` shows it."""

    section: str
    key: str
    value: Any
    source: str
    doc: str
    secret: bool

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    def shown(self) -> str:
        """The value as it may be printed: secrets masked, database passwords hidden."""
        if self.secret:
            return "******** (set)" if self.value else "(not set)"
        if self.name == "database.url":
            return mask_url(self.value)
        if isinstance(self.value, tuple):
            return ", ".join(self.value) if self.value else "(none)"
        return "(not set)" if self.value == "" else str(self.value)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every tunable of cruncher, resolved, with where each value came from."""

    paths: PathSettings
    database: DatabaseSettings
    backend: BackendSettings
    drp: DrpSettings
    psfsub: PsfSubSettings
    realtime: RealtimeSettings
    chat: ChatSettings
    compute: ComputeSettings
    logging: LoggingSettings
    config_file: str | None = None
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, name: str) -> Any:
        """The value of ``section.key``."""
        section, key = _split_name(name)
        return getattr(getattr(self, section), key)

    def describe(self) -> Iterator[SettingInfo]:
        """Every setting, in declaration order, with its source."""
        for section, cls in SECTIONS.items():
            for f in dataclasses.fields(cls):
                name = f"{section}.{f.name}"
                yield SettingInfo(section=section, key=f.name, value=self.get(name),
                                  source=self.sources.get(name, DEFAULT_SOURCE),
                                  doc=f.metadata["doc"], secret=f.metadata["secret"])

    def data_roots(self) -> tuple[Path, ...]:
        """Directories that instructions may name files in."""
        p = self.paths
        roots = (p.raw, p.reduced, p.calibrations, p.queue, *p.extra_roots)
        return tuple(Path(r) for r in roots)

    @functools.cached_property
    def _resolved_roots(self) -> tuple[str, ...]:
        return tuple(os.path.realpath(root) for root in self.data_roots())

    def check_in_roots(self, path: str | os.PathLike, *, is_link: bool | None = None) -> Path:
        """Return ``path`` resolved, or raise :class:`OutsideDataRootError` if it escapes the roots.

        Symbolic links and ``..`` are followed before the check, so neither can lead outside.
        Directories are resolved once and remembered (a backend checks thousands of files in
        the same few directories); the file itself is always checked for being a link (a caller
        that has just ``lstat``-ed it may say whether it is one).
        """
        text = os.fspath(path)
        head, tail = os.path.split(os.path.normpath(text))
        if is_link is None:
            is_link = os.path.islink(text)
        if tail in ("", "..") or is_link:
            resolved = os.path.realpath(text)
        else:
            resolved = os.path.join(_real_directory(head), tail)
        for root in self._resolved_roots:
            if resolved == root or resolved.startswith(root.rstrip(os.sep) + os.sep):
                return Path(resolved)
        raise OutsideDataRootError(
            f"{path} is outside the data roots ({', '.join(str(r) for r in self.data_roots())})")

    def make_dirs(self) -> None:
        """Create the data roots that do not exist yet."""
        p = self.paths
        for d in (p.root, p.raw, p.reduced, p.queue, p.logs, p.calibrations):
            Path(d).mkdir(parents=True, exist_ok=True)


@functools.lru_cache(maxsize=4096)
def _real_directory(directory: str) -> str:
    return os.path.realpath(directory)


# --- loading ---------------------------------------------------------------------------------


def find_config_file(explicit: str | os.PathLike | None = None,
                     env: Mapping[str, str] | None = None) -> Path | None:
    """Locate the configuration file: ``--config``, ``$CRUNCHER_CONFIG``, ``./``, ``~/.config``.

    An explicitly named file (flag or environment) must exist; the two default places are
    optional.
    """
    env = os.environ if env is None else env
    named = explicit or env.get("CRUNCHER_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist")
        return path
    for candidate in (Path("cruncher.toml"), Path("~/.config/cruncher/cruncher.toml").expanduser()):
        if candidate.is_file():
            return candidate
    return None


def load_settings(config_file: str | os.PathLike | None = None, *,
                  env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None,
                  flags: Mapping[str, str] | None = None,
                  search: bool = True) -> Settings:
    """Build the effective settings.

    Parameters
    ----------
    config_file
        A TOML file given explicitly (``--config``); it must exist.
    env
        The environment to read ``CRUNCHER_*`` variables from (default ``os.environ``).
    overrides
        ``{"section.key": value}`` from command-line flags; a string is parsed as an environment
        value would be, anything else must already have the setting's type.
    flags
        ``{"section.key": "--flag"}``: the flag that set each override, for ``cruncher config``.
    search
        Look for a configuration file in the default places when none is named.

    Raises
    ------
    ConfigError
        An unknown key, a value of the wrong type or outside its allowed values; the message names
        the key and where it came from.
    """
    env = os.environ if env is None else env
    path = find_config_file(config_file, env) if (config_file or search) else None
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        _apply(values, sources, _read_toml(path), source=f"file {path}", textual=False)
    _apply(values, sources, _from_env(env), source=None, textual=True)
    for name, value in (overrides or {}).items():
        flag = (flags or {}).get(name, f"--set {name}")
        _apply(values, sources, {name: value}, source=f"command line {flag}", textual=True)
    _derive_paths(values, sources)
    sections = {s: cls(**{k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(s + ".")})
                for s, cls in SECTIONS.items()}
    return Settings(**sections, config_file=str(path) if path else None,
                    sources=MappingProxyType(sources))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    flat: dict[str, Any] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}] "
                              f"(known: {', '.join(SECTIONS)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table of key = value")
        for key, value in table.items():
            flat[f"{section}.{key}"] = value
    return flat


#: Variables other tools already use for a setting (``CRUNCHER_<SECTION>_<KEY>`` wins over them).
ENV_ALIASES = {"SLACK_BOT_TOKEN": "chat.slack_bot_token", "SLACK_APP_TOKEN": "chat.slack_app_token"}


def _from_env(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``{"section.key": (text, "environment VAR")}`` for every ``CRUNCHER_<SECTION>_<KEY>``
    (and the :data:`ENV_ALIASES`)."""
    found: dict[str, tuple[str, str]] = {name: (env[var], f"environment {var}")
                                         for var, name in ENV_ALIASES.items() if env.get(var)}
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX) or var.startswith(RESERVED_ENV):
            continue
        rest = var[len(ENV_PREFIX):].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS or not key:
            raise ConfigError(f"environment {var}: not a cruncher setting "
                              f"(expected CRUNCHER_<SECTION>_<KEY>, sections: {', '.join(SECTIONS)})")
        found[f"{section}.{key}"] = (text, f"environment {var}")
    return found


def _apply(values: dict[str, Any], sources: dict[str, str], layer: Mapping[str, Any],
           source: str | None, *, textual: bool) -> None:
    """Validate and merge one layer; ``source=None`` means each value carries its own.

    In a ``textual`` layer (environment, command line) strings are parsed into the setting's
    type; TOML values are typed already and must match.
    """
    for name, raw in layer.items():
        where = source
        if source is None:
            raw, where = raw
        spec = _field(name, where)
        values[name] = _coerce(spec, raw, name, where, textual)
        sources[name] = where


def _field(name: str, where: str) -> dataclasses.Field:
    section, key = _split_name(name, where)
    for f in dataclasses.fields(SECTIONS[section]):
        if f.name == key:
            return f
    known = ", ".join(f.name for f in dataclasses.fields(SECTIONS[section]))
    raise ConfigError(f"{where}: unknown key {name} (keys of [{section}]: {known})")


def _split_name(name: str, where: str = "setting") -> tuple[str, str]:
    section, _, key = name.partition(".")
    if section not in SECTIONS or not key:
        raise ConfigError(f"{where}: unknown setting {name!r} (use section.key; sections: "
                          f"{', '.join(SECTIONS)})")
    return section, key


def _coerce(spec: dataclasses.Field, raw: Any, name: str, where: str, textual: bool) -> Any:
    kind = _hints(spec)
    try:
        parse = textual and isinstance(raw, str) and kind is not str
        value = _parse_text(kind, raw) if parse else raw
        value = _check_type(kind, value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {name} = {raw!r}: {exc}") from None
    choices, minimum = spec.metadata["choices"], spec.metadata["minimum"]
    if choices and value not in choices:
        raise ConfigError(f"{where}: {name} = {raw!r}: must be one of {', '.join(choices)}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where}: {name} = {raw!r}: must be at least {minimum}")
    return value


def _hints(spec: dataclasses.Field) -> Any:
    owner = next(cls for cls in SECTIONS.values() if spec in dataclasses.fields(cls))
    return typing.get_type_hints(owner)[spec.name]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_text(kind: Any, text: str) -> Any:
    """Parse an environment or command-line string into the setting's type."""
    t = text.strip()
    if kind is bool:
        if t.lower() in _TRUE | _FALSE:
            return t.lower() in _TRUE
        raise ValueError("expected a boolean (true/false, yes/no, 1/0, on/off)")
    try:
        if kind is int:
            return int(t)
        if kind is float:
            return float(t)
    except ValueError:
        raise ValueError(f"expected {kind.__name__}") from None
    if typing.get_origin(kind) is tuple:
        return tuple(part.strip() for part in t.split(",") if part.strip())
    return text


def _check_type(kind: Any, value: Any) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(kind) is tuple:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise TypeError("expected a list of strings")
    if kind in (int, float) and isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _derive_paths(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Expand and absolutise the data roots; fill derived defaults from ``paths.root``."""
    root = Path(values.get("paths.root", PathSettings.root)).expanduser().resolve()
    values["paths.root"] = str(root)
    for sub in ("raw", "reduced", "queue", "logs", "calibrations"):
        name = f"paths.{sub}"
        if values.get(name):
            values[name] = str(Path(values[name]).expanduser().resolve())
        else:
            values[name] = str(root / sub)
            sources.setdefault(name, "default (under paths.root)")
    extra = values.get("paths.extra_roots", ())
    values["paths.extra_roots"] = tuple(str(Path(r).expanduser().resolve()) for r in extra)
    if not values.get("database.url"):
        values["database.url"] = f"sqlite:///{root / 'cruncher.db'}"
        sources.setdefault("database.url", "default (under paths.root)")


def mask_url(url: str) -> str:
    """A database URL with its password replaced by ``***``."""
    if not url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown without anything after the scheme
        return url.split("://", 1)[0] + "://***"
