"""The command line, as a user meets it: exit statuses, output, help, masking."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest

from cruncher.cli import main, reprocess_main, super_cruncher_main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_config_shows_values_sources_and_masks_secrets(capsys, tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "mysql+mysqlconnector://u:hunter2@h/db"\n')
    monkeypatch.setenv("CRUNCHER_BACKEND_TOKEN", "tok-123456")
    code, out, _ = run(capsys, "config", "--config", str(cfg), "--data-root", str(tmp_path),
                       "--set", "drp.workers=4")
    assert code == 0
    assert "hunter2" not in out and "tok-123456" not in out
    line = next(line for line in out.splitlines() if line.startswith("workers"))
    assert "4" in line and "command line --set drp.workers" in line
    assert "environment CRUNCHER_BACKEND_TOKEN" in out and f"file {cfg}" in out
    assert "command line --data-root" in out


def test_config_toml_output_is_a_valid_config_file(capsys, tmp_path):
    code, out, _ = run(capsys, "config", "--format", "toml", "--data-root", str(tmp_path),
                       "--set", "psfsub.engine=fast")
    assert code == 0
    body = out.split("\n", 1)[1]
    parsed = tomllib.loads(body)
    assert parsed["psfsub"]["engine"] == "fast" and parsed["paths"]["root"] == str(tmp_path)
    (tmp_path / "again.toml").write_text(body)
    code, out, _ = run(capsys, "config", "--format", "json", "--config", str(tmp_path / "again.toml"))
    assert code == 0 and json.loads(out)["psfsub.engine"]["value"] == "fast"


def test_bad_setting_exits_2_naming_it(capsys):
    code, _, err = run(capsys, "config", "--set", "drp.workers=many")
    assert code == 2 and "drp.workers" in err and "--set drp.workers" in err
    code, _, err = run(capsys, "config", "--set", "nonsense")
    assert code == 2 and "SECTION.KEY=VALUE" in err


def test_db_workflow(capsys, night, tmp_path):
    root = ["--data-root", str(tmp_path / "data")]
    code, out, _ = run(capsys, "db", "init", *root)
    assert code == 0 and "(created)" in out
    code, out, _ = run(capsys, "db", "init", *root)
    assert "(already up to date)" in out
    bad = night / "131118" / "S20131118S0077.fits"
    bad.write_text("garbage" * 500)
    code, out, _ = run(capsys, "db", "ingest", str(night), "--no-progress", *root)
    assert code == 1 and "12 added" in out and f"FAILED {bad}" in out
    code, out, _ = run(capsys, "db", "mark-bad", "S20131118S0004.fits", "--note", "AO open",
                       "--user", "obs", *root)
    assert code == 0 and "marked bad" in out
    code, out, _ = run(capsys, "db", "find", "--target", "HD 95086", "--obstype", "OBJECT",
                       "--format", "paths", *root)
    assert len(out.split()) == 5 and "S20131118S0004" not in out
    code, out, _ = run(capsys, "db", "find", "--target", "HD 95086", "--since", "20131118",
                       "--include-bad", "--format", "json", *root)
    assert len(json.loads(out)) == 7
    code, out, _ = run(capsys, "db", "mark-good", "S20131118S0004.fits", *root)
    code, out, _ = run(capsys, "db", "notes", "S20131118S0004.fits", *root)
    assert "BAD  obs: AO open" in out and "good" in out.splitlines()[1]
    code, out, err = run(capsys, "db", "find", "--target", "HD 9508", *root)
    assert "did you mean: HD 95086" in err
    code, out, err = run(capsys, "db", "mark-bad", "S20991231S0001.fits", "--note", "x", *root)
    assert code == 0 and "not in the raw table" in err
    assert (tmp_path / "data" / "logs" / "cruncher.log").read_text().count("ingest:") == 1


def test_find_before_init_says_what_to_do(capsys, tmp_path):
    code, _, err = run(capsys, "db", "find", "--data-root", str(tmp_path / "empty"))
    assert code == 2 and "cruncher db init" in err


def test_bad_date_is_a_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["db", "find", "--since", "yesterday", "--data-root", str(tmp_path)])
    assert exc.value.code == 2
    assert "not a date" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["demo"], ["config"], ["db"], ["db", "init"],
                                  ["db", "ingest"], ["db", "mark-bad"], ["db", "mark-good"],
                                  ["db", "notes"], ["db", "find"], ["db", "products"],
                                  ["db", "inputs"], ["simulate"], ["simulate", "night"],
                                  ["simulate", "cubes"], ["drp"], ["drp", "worker"],
                                  ["drp", "run"], ["drp", "calibrations"], ["backend"],
                                  ["status"], ["send"], ["psfsub"], ["scan"]])
def test_every_command_explains_itself(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: cruncher" in out and len(out.splitlines()) > 5


def test_super_cruncher_explains_itself_and_what_it_needs(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        super_cruncher_main([])
    assert exc.value.code == 2 and "instructions" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        super_cruncher_main(["--help"])
    out = capsys.readouterr().out
    assert "usage: super_cruncher" in out and "--resume" in out and "phases" in out
    assert super_cruncher_main([str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_reprocess_without_a_target_says_what_it_needs(capsys):
    assert reprocess_main([]) == 2
    assert "give a target (or --all for every target)" in capsys.readouterr().err


def test_installed_console_scripts_run():
    bindir = __import__("pathlib").Path(sys.executable).parent
    out = subprocess.run([bindir / "cruncher", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("cruncher ")
    res = subprocess.run([bindir / "super_cruncher", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "usage: super_cruncher" in res.stdout
    res = subprocess.run([bindir / "reprocess", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "usage: reprocess" in res.stdout
