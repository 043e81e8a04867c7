"""The ``cruncher`` command and its subcommands; console scripts ``reprocess`` and ``super_cruncher``.

Each area registers its own subcommands (``register(subparsers)``); a handler receives the parsed
arguments and the effective :class:`~cruncher.config.Settings` and returns an exit status. Options
common to every command (``--config``, ``--data-root``, ``--db-url``, ``--set``, ``-v``) may be
given before or after the subcommand.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cruncher import __version__
from cruncher.config import Settings, load_settings
from cruncher.config_reference import reference_markdown, toml_value
from cruncher.errors import ConfigError, CruncherError, PermanentError, ValidationError
from cruncher.logs import setup_logging

_log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DESCRIPTION = """\
cruncher: automated data processing for high-contrast imaging surveys.

Turns raw GPI frames into calibrated datacubes, observing sequences into PSF-subtracted images
and contrast curves, and indexes everything in a database (SQLite by default, MariaDB/MySQL in
production). Settings come from defaults < cruncher.toml < CRUNCHER_<SECTION>_<KEY> < flags;
`cruncher config` shows the effective ones and where each came from."""
EPILOG = """\
examples:
  cruncher demo                                  a simulated night, end to end
  cruncher config                                effective settings and their sources
  cruncher db init                               create the tables (idempotent)
  cruncher db ingest /data/raw/131118            index raw frames (headers only)
  cruncher db mark-bad S20131118S0064.fits --note "AO loop open"
  cruncher db find --target "HD 95086" --band H  raw frames of a target, bad ones left out
"""
#: Flags common to every command, by the setting they override.
_OVERRIDE_FLAGS = {"data_root": ("paths.root", "--data-root"), "db_url": ("database.url", "--db-url")}


def common_options() -> argparse.ArgumentParser:
    """Options every command accepts, before or after its name."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("common options")
    group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="configuration file (default: $CRUNCHER_CONFIG, ./cruncher.toml, "
                            "~/.config/cruncher/cruncher.toml)")
    group.add_argument("--data-root", metavar="DIR", default=argparse.SUPPRESS,
                       help="top of the data tree (paths.root)")
    group.add_argument("--db-url", metavar="URL", default=argparse.SUPPRESS,
                       help="database URL (database.url), e.g. sqlite:///cruncher.db or "
                            "mysql+mysqlconnector://user:pw@host/db")
    group.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append",
                       default=argparse.SUPPRESS, help="override any setting (repeatable)")
    group.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help="more log output (-vv for debug)")
    group.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="warnings and errors only")
    return parent


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(prog="cruncher", description=DESCRIPTION, epilog=EPILOG,
                                     parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cruncher {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _registrars():
        register(sub, common)
    return parser


def _registrars() -> list[Callable]:
    from cruncher import demo
    from cruncher.backend import cli as backend_cli
    from cruncher.db import cli as db_cli
    from cruncher.drp import cli as drp_cli
    from cruncher.instructors import cli as instructors_cli
    from cruncher.instruments.gpi.sim import cli as sim_cli
    from cruncher.psfsub import cli as psfsub_cli

    return [demo.register, _register_config, db_cli.register, sim_cli.register, drp_cli.register,
            backend_cli.register, psfsub_cli.register, instructors_cli.register]


def add_command(sub, common: argparse.ArgumentParser, name: str, handler: Callable, *,
                help: str, description: str | None = None, epilog: str | None = None,
                logs_to_file: bool = False,
                setting_flags: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """Add a subcommand whose handler is ``handler(args, settings) -> int``.

    ``setting_flags`` maps the command's own options (by ``dest``) to the settings they
    override, e.g. ``{"port": "backend.port"}``: given, they take precedence over everything.
    """
    parser = sub.add_parser(name, help=help, description=description or help, epilog=epilog,
                            parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(handler=handler, logs_to_file=logs_to_file,
                        setting_flags=setting_flags or {})
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The effective settings for parsed command-line arguments."""
    overrides, flags = {}, {}
    for attr, (name, flag) in _OVERRIDE_FLAGS.items():
        if getattr(args, attr, None) is not None:
            overrides[name], flags[name] = getattr(args, attr), flag
    for attr, name in (getattr(args, "setting_flags", None) or {}).items():
        if getattr(args, attr, None) is not None:
            overrides[name] = getattr(args, attr)
            flags[name] = "--" + attr.replace("_", "-")
    for item in getattr(args, "set", None) or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected SECTION.KEY=VALUE")
        overrides[name.strip()], flags[name.strip()] = value, f"--set {name.strip()}"
    return load_settings(getattr(args, "config", None), overrides=overrides, flags=flags)


def _log_level(args: argparse.Namespace, settings: Settings) -> str:
    if getattr(args, "quiet", False):
        return "WARNING"
    verbose = getattr(args, "verbose", 0) or 0
    return {0: settings.logging.level, 1: "INFO"}.get(verbose, "DEBUG")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cruncher``; returns the exit status."""
    return run_command(build_parser(), argv)


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse, load settings, set up logging and run the handler, with clear errors."""
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        logfile = Path(settings.paths.logs) / "cruncher.log" if args.logs_to_file else None
        setup_logging(_log_level(args, settings), logfile=logfile, json_lines=settings.logging.json)
        return int(args.handler(args, settings) or EXIT_OK)
    except (ConfigError, ValidationError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CruncherError as exc:
        kind = "" if isinstance(exc, PermanentError) else " (transient; try again)"
        print(f"{parser.prog}: error{kind}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


# --- cruncher config ---------------------------------------------------------------------------


def _register_config(sub, common) -> None:
    parser = add_command(sub, common, "config", _config_command,
                         help="show the effective settings and where each came from",
                         epilog="Secrets (tokens, passwords) are always shown masked.")
    parser.add_argument("--format", choices=("text", "toml", "json"), default="text",
                        help="text (with sources), toml (a starting cruncher.toml) or json")
    parser.add_argument("--reference", action="store_true",
                        help="print the configuration reference instead (Markdown: every key, its "
                             "default, variable and meaning; docs/configuration.md)")


def _config_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.reference:
        sys.stdout.write(reference_markdown())
        return EXIT_OK
    infos = list(settings.describe())
    if args.format == "json":
        print(json.dumps({i.name: {"value": i.shown(), "source": i.source} for i in infos},
                         indent=2))
        return EXIT_OK
    print(f"# configuration file: {settings.config_file or '(none found)'}")
    section = None
    width = max(len(i.key) for i in infos)
    for info in infos:
        if info.section != section:
            section = info.section
            print(f"\n[{section}]")
        if args.format == "toml":
            value = info.shown() if info.secret else info.value
            print(f"{info.key} = {toml_value(value)}")
        else:
            print(f"{info.key:<{width}} = {info.shown():<40} # {info.source}")
    return EXIT_OK


# --- the other console scripts ----------------------------------------------------------------


def reprocess_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``reprocess``."""
    from cruncher.instructors.cli import reprocess_parser

    return run_command(reprocess_parser(), argv)


def super_cruncher_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``super_cruncher``."""
    from cruncher.instructors.super_cruncher import parser

    return run_command(parser(), argv)
