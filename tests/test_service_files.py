"""The telescope service files in scripts/: the example settings, the secrets template and the
systemd units stay true to the settings schema and to the commands cruncher has."""
from __future__ import annotations

import dataclasses
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cruncher.cli import build_parser
from cruncher.config import SECTIONS, load_settings

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
EXAMPLE_TOML = SCRIPTS / "cruncher.toml"
EXAMPLE_ENV = SCRIPTS / "cruncher.env.example"
UNITS = sorted(SCRIPTS.glob("*.service"))
BIN = Path(sys.executable).parent


def secret_names() -> set[str]:
    return {f"{section}.{f.name}" for section, cls in SECTIONS.items()
            for f in dataclasses.fields(cls) if f.metadata["secret"]}


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines, as systemd's EnvironmentFile= reads them (comments skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as ``{section: [(key, value), ...]}`` (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{path.name}: not a unit file line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def test_example_config_loads_with_the_settings_loader():
    settings = load_settings(EXAMPLE_TOML, env={})
    assert settings.config_file == str(EXAMPLE_TOML)
    assert settings.database.url.startswith("mysql+mysqlconnector://")
    assert settings.paths.raw == str(Path("/data/gpies/raw").resolve())
    assert settings.drp.mode == "builtin"
    assert settings.realtime.idle_close_min > 0 and settings.chat.channel.startswith("#")
    written = tomllib.loads(EXAMPLE_TOML.read_text())
    named = {f"{section}.{key}" for section, table in written.items() for key in table}
    assert not named & secret_names(), "secrets belong in the environment file, not the toml"
    assert ":" not in settings.database.url.split("://", 1)[1].split("@", 1)[0], "no password"


def test_example_environment_file_sets_real_settings_and_every_secret():
    env = read_env_file(EXAMPLE_ENV)
    settings = load_settings(EXAMPLE_TOML, env=env)     # an unknown variable would raise
    assert settings.sources["database.url"] == "environment CRUNCHER_DATABASE_URL"
    assert settings.backend.token and settings.chat.slack_bot_token and settings.chat.slack_app_token
    infos = {i.name: i for i in settings.describe()}
    assert "CHANGE-ME" not in infos["database.url"].shown()


@pytest.mark.parametrize("unit_path", UNITS, ids=lambda p: p.name)
def test_unit_runs_a_cruncher_service_as_its_own_user(unit_path):
    unit = read_unit(unit_path)
    assert values(unit, "Service", "Restart") == ["on-failure"]
    assert values(unit, "Service", "User") not in ([], ["root"])
    assert "CRUNCHER_CONFIG=/etc/cruncher/cruncher.toml" in values(unit, "Service", "Environment")
    assert values(unit, "Service", "EnvironmentFile") == ["-/etc/cruncher/cruncher.env"]
    assert values(unit, "Install", "WantedBy") == ["multi-user.target"]
    assert len(values(unit, "Service", "ExecStart")) == 1


def test_units_cover_the_backend_and_the_scanner():
    commands = {shlex.split(values(read_unit(u), "Service", "ExecStart")[0])[1] for u in UNITS}
    assert {"backend", "scan"} <= commands


@pytest.mark.parametrize("unit_path", UNITS, ids=lambda p: p.name)
def test_unit_execstart_is_a_real_cruncher_command(unit_path):
    argv = shlex.split(values(read_unit(unit_path), "Service", "ExecStart")[0])
    program, args = Path(argv[0]).name, argv[1:]
    assert program == "cruncher", f"{unit_path.name}: ExecStart runs {argv[0]}"
    parsed = build_parser().parse_args(args)          # unknown commands or flags exit here
    assert parsed.command == args[0]
    result = subprocess.run([BIN / program, *args, "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"usage: cruncher {args[0]}" in result.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_units_pass_systemd_analyze_verify(tmp_path):
    """systemd itself finds no unknown key or bad value (run on copies whose ExecStart names the
    cruncher installed here, since /opt/cruncher does not exist on a test machine)."""
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/cruncher/venv/bin/", f"{BIN}/"))
        copies.append(str(copy))
    result = subprocess.run(["systemd-analyze", "verify", *copies], capture_output=True,
                            text=True, timeout=60)
    ours = [line for line in (result.stdout + result.stderr).splitlines() if str(tmp_path) in line]
    assert not ours, "\n".join(ours)
