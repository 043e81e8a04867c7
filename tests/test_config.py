"""Configuration layering, validation, provenance and masking."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from cruncher.config import load_settings, mask_url, SECTIONS
from cruncher.config_reference import reference_markdown
from cruncher.errors import ConfigError, OutsideDataRootError


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_derive_every_root_from_paths_root(tmp_path):
    s = load_settings(search=False, env={}, overrides={"paths.root": str(tmp_path)})
    for sub in ("raw", "reduced", "queue", "logs", "calibrations"):
        assert getattr(s.paths, sub) == str(tmp_path / sub)
    assert s.database.url == f"sqlite:///{tmp_path / 'cruncher.db'}"
    assert s.sources["paths.raw"] == "default (under paths.root)"
    assert s.backend.port == 8765 and s.backend.host == "127.0.0.1"
    assert s.sources.get("backend.port") is None  # never set: reported as "default"
    assert next(i for i in s.describe() if i.name == "backend.port").source == "default"


def test_layers_file_then_env_then_cli(tmp_path):
    cfg = write_toml(tmp_path / "c.toml", "[drp]\nworkers = 3\nrecipe_timeout_s = 5\n"
                                           "[backend]\nport = 9000\n")
    env = {"CRUNCHER_DRP_WORKERS": "5", "CRUNCHER_BACKEND_HOST": "0.0.0.0"}
    s = load_settings(cfg, env=env, overrides={"drp.workers": "7"}, flags={"drp.workers": "--workers"})
    assert s.backend.port == 9000 and s.sources["backend.port"] == f"file {cfg}"
    assert s.drp.recipe_timeout_s == 5.0 and isinstance(s.drp.recipe_timeout_s, float)
    assert s.backend.host == "0.0.0.0"
    assert s.sources["backend.host"] == "environment CRUNCHER_BACKEND_HOST"
    assert s.drp.workers == 7 and s.sources["drp.workers"] == "command line --workers"
    assert s.config_file == str(cfg)


def test_settings_are_frozen(tmp_path):
    s = load_settings(search=False, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.drp.workers = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.drp = None  # type: ignore[misc]


@pytest.mark.parametrize("text, words", [
    ("[nosuch]\nx = 1\n", ["unknown section [nosuch]"]),
    ("[drp]\nwrokers = 2\n", ["unknown key drp.wrokers", "workers"]),
    ("[backend]\nport = \"eighty\"\n", ["backend.port", "expected int"]),
    ("[backend]\nport = true\n", ["backend.port", "expected int"]),
    ("[backend]\ninterface = \"pigeon\"\n", ["backend.interface", "websocket"]),
    ("[drp]\nworkers = 0\n", ["drp.workers", "at least 1"]),
    ("[paths]\nextra_roots = \"/a\"\n", ["paths.extra_roots", "list of strings"]),
    ("drp = 3\n", ["[drp] must be a table"]),
    ("[drp\n", ["not valid TOML"]),
])
def test_bad_file_values_name_the_key_and_the_file(tmp_path, text, words):
    cfg = write_toml(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    assert str(cfg) in str(err.value)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("var, value, words", [
    ("CRUNCHER_BACKEND_PORT", "x", ["CRUNCHER_BACKEND_PORT", "backend.port"]),
    ("CRUNCHER_LOGGING_JSON", "maybe", ["CRUNCHER_LOGGING_JSON", "boolean"]),
    ("CRUNCHER_DRP_NOPE", "1", ["CRUNCHER_DRP_NOPE", "unknown key drp.nope"]),
    ("CRUNCHER_DATABSE_URL", "sqlite://", ["CRUNCHER_DATABSE_URL", "not a cruncher setting"]),
])
def test_bad_environment_names_the_variable(var, value, words):
    with pytest.raises(ConfigError) as err:
        load_settings(search=False, env={var: value})
    for word in words:
        assert word in str(err.value)


def test_environment_parsing_of_each_type():
    env = {"CRUNCHER_LOGGING_JSON": "yes", "CRUNCHER_DRP_POLL_INTERVAL_S": "0.5",
           "CRUNCHER_PATHS_EXTRA_ROOTS": "/a, /b", "CRUNCHER_CONFIG": "", "CRUNCHER_TEST_X": "1"}
    s = load_settings(search=False, env=env)
    assert s.logging.json is True
    assert s.drp.poll_interval_s == 0.5
    assert s.paths.extra_roots == ("/a", "/b")


def test_cli_override_bad_value_names_flag():
    with pytest.raises(ConfigError) as err:
        load_settings(search=False, env={}, overrides={"backend.port": "http"},
                      flags={"backend.port": "--port"})
    assert "--port" in str(err.value) and "backend.port" in str(err.value)


def test_config_file_search_order(tmp_path, monkeypatch):
    home_cfg = tmp_path / "home" / ".config" / "cruncher" / "cruncher.toml"
    home_cfg.parent.mkdir(parents=True)
    write_toml(home_cfg, "[drp]\nworkers = 2\n")
    assert load_settings(env={}).drp.workers == 2
    local = write_toml(tmp_path / "cruncher.toml", "[drp]\nworkers = 3\n")
    assert Path.cwd() == tmp_path
    assert load_settings(env={}).drp.workers == 3
    named = write_toml(tmp_path / "named.toml", "[drp]\nworkers = 4\n")
    assert load_settings(env={"CRUNCHER_CONFIG": str(named)}).drp.workers == 4
    explicit = write_toml(tmp_path / "explicit.toml", "[drp]\nworkers = 5\n")
    assert load_settings(explicit, env={"CRUNCHER_CONFIG": str(named)}).drp.workers == 5
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", env={})
    assert local.exists()


def test_secrets_and_passwords_are_masked(tmp_path):
    cfg = write_toml(tmp_path / "c.toml", '[backend]\ntoken = "s3cret-token"\n'
                     '[database]\nurl = "mysql+mysqlconnector://u:hunter2@db/x"\n')
    s = load_settings(cfg, env={"CRUNCHER_CHAT_SLACK_BOT_TOKEN": "xoxb-1"})
    shown = {i.name: i.shown() for i in s.describe()}
    assert "s3cret" not in " ".join(shown.values())
    assert "hunter2" not in " ".join(shown.values())
    assert "xoxb" not in " ".join(shown.values())
    assert shown["backend.token"] == "******** (set)"
    assert shown["chat.slack_app_token"] == "(not set)"
    assert shown["database.url"] == "mysql+mysqlconnector://u:***@db/x"
    assert s.backend.token == "s3cret-token"  # the value itself is intact
    assert mask_url("not a url at all") in ("not a url at all", "not a url at all://***")


def test_check_in_roots(tmp_path):
    s = load_settings(search=False, env={}, overrides={"paths.root": str(tmp_path / "data"),
                                                       "paths.extra_roots": "/mnt/archive"})
    inside = Path(s.paths.raw) / "131118" / "S20131118S0001.fits"
    assert s.check_in_roots(inside) == inside
    assert s.check_in_roots("/mnt/archive/x.fits") == Path("/mnt/archive/x.fits")
    for outside in ("/etc/passwd", str(Path(s.paths.raw) / ".." / ".." / "secret")):
        with pytest.raises(OutsideDataRootError):
            s.check_in_roots(outside)
    Path(s.paths.raw).mkdir(parents=True)
    link = Path(s.paths.raw) / "escape"
    os.symlink("/etc", link)
    with pytest.raises(OutsideDataRootError):
        s.check_in_roots(link / "passwd")


def test_reference_lists_every_setting_in_a_table_per_section():
    text = reference_markdown()
    for section, cls in SECTIONS.items():
        table = text.split(f"## `[{section}]`\n", 1)[1].split("\n## ", 1)[0]
        for f in dataclasses.fields(cls):
            row = next(line for line in table.splitlines() if line.startswith(f"| `{f.name}` |"))
            assert f"`CRUNCHER_{section.upper()}_{f.name.upper()}`" in row
    assert "| `port` | `8765` |" in text and "| `json` | `false` |" in text
    assert "| `url` | derived from `paths.root` |" in text
    assert "Secret: shown masked." in text and "One of `builtin`, `external`." in text
