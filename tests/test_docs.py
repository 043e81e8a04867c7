"""The documentation says what the code does: every command in the README parses and its
``--help`` works, every SQL example runs against the schema, every module it names exists, the
Python example works, and docs/configuration.md is what ``cruncher config --reference`` prints."""
from __future__ import annotations

import argparse
import datetime as dt
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cruncher.config_reference import REGENERATE, reference_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
PROGRAMS = ("cruncher", "reprocess", "super_cruncher")
SHELL_OPERATORS = {"&", "&&", "|", "||", ";", ">", ">>", "<", "2>", "2>&1"}
LAUNCHERS = {"mpiexec", "mpirun", "srun", "sudo", "env", "nohup", "time", "exec"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_FENCE = re.compile(r"^([ \t]*)```(\w*)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)


def fenced_blocks(text: str, language: str) -> list[str]:
    """The code blocks of ``language`` in Markdown ``text`` (list indentation removed)."""
    return [textwrap.dedent(body) for _, lang, body in _FENCE.findall(text) if lang == language]


def strip_comment(line: str) -> str:
    """``line`` without its shell comment: a ``#`` that starts a word, outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def shell_commands(block: str) -> list[list[str]]:
    """Each command of a shell block as words (continuations and multi-line quotes joined)."""
    commands, pending = [], ""
    for line in block.splitlines():
        pending += strip_comment(line)
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        try:
            words = shlex.split(pending)
        except ValueError:          # a quotation still open: the command goes on
            pending += "\n"
            continue
        pending = ""
        if words:
            commands.append(words)
    return commands


def cruncher_invocation(words: list[str]) -> list[str] | None:
    """``[program, args...]`` when a shell command runs a cruncher console script: as its command
    word (after ``VAR=value`` assignments) or through a launcher (``mpiexec -n 3 cruncher ...``)."""
    launched = False
    for i, word in enumerate(words):
        if Path(word).name in PROGRAMS and words[i - 1:i] not in (["-u"], ["--user"]):
            args = []
            for arg in words[i + 1:]:
                if arg in SHELL_OPERATORS:
                    break
                args.append(arg)
            return [Path(word).name, *args]
        if Path(word).name in LAUNCHERS:
            launched = True
        elif not (launched or ASSIGNMENT.match(word)):
            return None
    return None


def readme_invocations() -> list[list[str]]:
    text = README.read_text()
    found = []
    for block in fenced_blocks(text, "sh"):
        for words in shell_commands(block):
            invocation = cruncher_invocation(words)
            if invocation is not None and invocation not in found:
                found.append(invocation)
    return found


def parser_for(program: str) -> argparse.ArgumentParser:
    if program == "cruncher":
        from cruncher.cli import build_parser

        return build_parser()
    if program == "reprocess":
        from cruncher.instructors.cli import reprocess_parser

        return reprocess_parser()
    from cruncher.instructors.super_cruncher import parser

    return parser()


def subcommand_path(parser: argparse.ArgumentParser, args: list[str]) -> tuple[str, ...]:
    """The subcommand names ``args`` start with (``("db", "mark-bad")``)."""
    path = []
    for word in args:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or word not in subparsers[0].choices:
            break
        path.append(word)
        parser = subparsers[0].choices[word]
    return tuple(path)


INVOCATIONS = readme_invocations()


def test_the_readme_shows_commands_of_every_console_script():
    programs = {invocation[0] for invocation in INVOCATIONS}
    assert set(PROGRAMS) <= programs, programs
    assert len(INVOCATIONS) >= 30


@pytest.mark.parametrize("invocation", INVOCATIONS, ids=shlex.join)
def test_readme_command_parses(invocation, capsys):
    """The command line is accepted by the real parser: its subcommand and flags exist."""
    program, *args = invocation
    try:
        parser_for(program).parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"`{shlex.join(invocation)}` does not parse (exit {exc.code}): "
                    f"{capsys.readouterr().err}")


def distinct_commands() -> list[tuple[str, ...]]:
    """Every (sub)command the README uses, once: ``("cruncher", "db", "mark-bad")``."""
    return sorted({(program, *subcommand_path(parser_for(program), args))
                   for program, *args in INVOCATIONS})


@pytest.mark.parametrize("program", PROGRAMS)
def test_console_scripts_start_and_explain_themselves(program):
    """The installed executables, as a user runs them (each a fresh interpreter, so only the
    programs themselves: every subcommand's help is checked in-process below)."""
    result = subprocess.run([BIN / program, "--help"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {program}")


def test_readme_subcommands_explain_themselves(capsys):
    """``--help`` of every distinct (sub)command the README uses exits 0 with its usage."""
    commands = distinct_commands()
    assert len(commands) > 15
    for program, *path in commands:
        with pytest.raises(SystemExit) as exc:
            parser_for(program).parse_args([*path, "--help"])
        out = capsys.readouterr().out
        assert exc.value.code == 0, f"{program} {' '.join(path)} --help"
        assert out.startswith(f"usage: {' '.join([program, *path])}"), out[:200]


def test_every_file_the_readme_names_exists():
    text = README.read_text()
    named = set(re.findall(r"`((?:cruncher|scripts|slurm|docs|tests|bench)/[\w./-]*)`", text))
    named |= {link for link in re.findall(r"\]\(([^)#\s]+)\)", text) if "://" not in link}
    assert len(named) > 30
    missing = sorted(name for name in named if not (ROOT / name).exists())
    assert not missing, f"the README names files that do not exist: {missing}"


def test_configuration_reference_is_up_to_date():
    path = ROOT / "docs" / "configuration.md"
    assert path.exists() and path.read_text() == reference_markdown(), (
        f"docs/configuration.md is out of date with cruncher/config_schema.py: run `{REGENERATE}`")


def test_config_reference_command_prints_the_reference(capsys):
    from cruncher.cli import main

    assert main(["config", "--reference"]) == 0
    assert capsys.readouterr().out == reference_markdown()


# --- the SQL examples -----------------------------------------------------------------------------


@pytest.fixture
def populated(engine, night):
    """A database holding what the SQL examples ask about: a night's raw frames (one marked bad),
    a cube, a general KLIP reduction with a detection, calibrated contrast curves, a failed job."""
    from cruncher.backend.journal import Journal
    from cruncher.db import queries
    from cruncher.db.ingest import ingest
    from cruncher.db.products import record_contrast, record_detections, record_product

    ingest(engine, [night])
    queries.add_note(engine, "S20131118S0005.fits", "AO loop open", bad=True, user="test")
    frames = [f"S20131118S{n:04d}.fits" for n in range(4, 10)]
    about = dict(target="HD 95086", band="H", mode="spec", date_obs=dt.date(2013, 11, 18))
    outdir = night.parent / "reduced" / "HD_95086" / "autoreduced" / "20131118_H_Spec"
    record_product(engine, path=outdir / "S20131118S0004_spdc.fits", kind="spdc",
                   inputs=frames[:1], **about)
    klip = record_product(engine, path=outdir / "pyklip-S20131118-H-k300a9s4m1-KLmodes-all.fits",
                          kind="klip_general", inputs=frames, **about)
    record_detections(engine, klip, [{"x": 150.0, "y": 120.0, "sep_arcsec": 0.62, "pa_deg": 151.0,
                                      "snr": 9.5}], kl=20)
    separations = np.linspace(0.2, 1.0, 9)
    for planet_type in ("L", "T"):
        curve = record_product(engine, path=outdir / f"contrast-S20131118-H-{planet_type}.fits",
                               kind=f"contrast_{planet_type}", inputs=frames, **about,
                               fiducial={"contrast_025": 2e-5, "contrast_040": 6e-6,
                                         "contrast_080": 1e-6})
        record_contrast(engine, curve, planet_type, separations, 1e-5 / separations ** 2,
                        calibrated=True)
    journal = Journal(engine)
    try:
        journal.add_job("klip_disk:0123", "psf", key="klip_disk:0123", parent_id=None, payload="{}")
        journal.set_state("klip_disk:0123", "failed", error="BadInputError: no field rotation")
    finally:
        journal.close()
    return engine


def test_readme_has_sql_examples_of_the_tables_that_matter():
    text = " ".join(fenced_blocks(README.read_text(), "sql"))
    for table in ("raw", "notes", "reduced", "contrast", "detections", "jobs"):
        assert re.search(rf"\b(FROM|JOIN) {table}\b", text), table


def test_readme_sql_examples_run_against_the_schema(populated):
    blocks = fenced_blocks(README.read_text(), "sql")
    assert len(blocks) >= 4
    with populated.connect() as conn:
        for sql in blocks:
            rows = conn.exec_driver_sql(sql.strip()).all()
            assert rows, f"no rows from the README's example:\n{sql}"
        first = conn.exec_driver_sql(blocks[0].strip()).all()
    assert "S20131118S0005.fits" not in {row[0] for row in first}, "a bad frame was listed"
    assert len(first) == 5


# --- the Python example -----------------------------------------------------------------------


def test_readme_primitive_example_works(tmp_path):
    from cruncher.drp import primitive
    from cruncher.drp.context import ReductionContext
    from cruncher.drp.drplog import DrpLog
    from cruncher.recipes.recipe import Recipe

    (example,) = [b for b in fenced_blocks(README.read_text(), "python") if "@register" in b]
    # The built-in primitives registered first: once their modules are imported they cannot
    # register again, so the registry restored below must already hold them.
    before = dict(primitive.load_primitives())
    try:
        exec(compile(example, "README.md", "exec"), {"__name__": "readme_example"})
        cls = primitive.lookup("mask cube edges")
        recipe = Recipe.from_xml('<recipe Name="t" ReductionType="SpectralScience" ShortName="t">'
                                 '<dataset InputDir="/in" OutputDir="/out"/></recipe>',
                                 require_inputs=False)
        ctx = ReductionContext(recipe=recipe, recipe_name="t", calibrations=None,
                               log=DrpLog(tmp_path))
        with pytest.raises(primitive.PrimitiveError):
            cls({})(ctx)
        ctx.cube = np.ones((37, 20, 20), np.float32)
        cls({"width": "3"})(ctx)
    finally:
        primitive.REGISTRY.clear()
        primitive.REGISTRY.update(before)
    assert np.isnan(ctx.cube[:, :3]).all() and np.isnan(ctx.cube[:, :, -3:]).all()
    assert np.isfinite(ctx.cube[:, 3:-3, 3:-3]).all()
    assert ctx.ext_updates["DRPEDGE"][0] == 3 and "Mask cube edges" in ctx.history[0]
