"""The benchmark runner (``bench/run.py``) and its table (``bench/table.py``).

The benchmarks themselves are not run here (they take an hour and more); the runner's mechanics
are exercised on two small scripts written for the test, and the table on the results files the
benchmarks wrote (``bench/results``).
"""
from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
KEPT = sorted((BENCH / "results").glob("2026-11-21-*.json"))


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module         # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


runner, table = _load("run"), _load("table")


def test_every_kept_results_file_renders_rows_with_its_own_numbers():
    assert KEPT, "bench/results holds no results files"
    for path in KEPT:
        result = json.loads(path.read_text())
        rows = table.rows(result["benchmark"], result)
        assert rows, f"no rows from {path.name}"
    engines = json.loads((BENCH / "results" / "2026-11-21-klip-engines.json").read_text())
    rows = {row.figure: row for row in table.rows("klip-engines", engines)}
    ratio = rows["KLIP general, 20 cubes: pyKLIP / fast"]
    assert ratio.median == f"{engines['sizes']['20']['speedup']:.2f}x time"
    fast = rows["KLIP general, 20 cubes, fast engine"]
    walls = [run["wall_s"] for run in engines["sizes"]["20"]["fast"]["all"]]
    assert fast.median == table.seconds(sorted(walls)[1])
    assert fast.range == f"{table.seconds(min(walls))} - {table.seconds(max(walls))}"
    assert fast.runs == "3"


def test_a_partial_results_file_renders_what_it_has():
    engines = json.loads((BENCH / "results" / "2026-11-21-klip-engines.json").read_text())
    partial = {"sizes": {"10": {"fast": engines["sizes"]["10"]["fast"]}}}
    figures = [row.figure for row in table.rows("klip-engines", partial)]
    assert figures == ["KLIP general, 10 cubes, fast engine"]
    assert table.rows("realtime", {"night": {}}) == []


def test_seconds_reads_at_a_glance():
    assert [table.seconds(v) for v in (0.0021, 1.5, 415.1, 21_600)] == \
        ["2.1 ms", "1.5 s", "6.92 min", "6 h"]


def test_results_files_are_named_after_the_machine():
    assert runner.machine_slug({"cpu": "Intel(R) Xeon(R) Processor @ 2.50GHz", "cores": 2}) == \
        "intel-xeon-2cpu"
    assert runner.machine_slug({"cpu": "AMD EPYC", "cores": 2}) == "amd-epyc-2cpu"


def test_collected_results_say_where_they_came_from():
    combined = runner.collect(KEPT)
    text = runner.render(combined)
    assert text.startswith(f"Measured 2026-11-21 collected from {len(KEPT)} results files")
    assert "| KLIP engines | KLIP general, 40 cubes, fast engine |" in text


def test_the_readme_section_is_replaced_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:latest:start -->\nold\n<!-- bench:latest:end -->\nrest\n")
    runner.update_readme("| new |\n", "latest", readme)
    assert readme.read_text() == ("intro\n<!-- bench:latest:start -->\n| new |\n"
                                  "<!-- bench:latest:end -->\nrest\n")
    with pytest.raises(SystemExit, match="no <!-- bench:other:start -->"):
        runner.update_readme("x", "other", readme)


def test_the_readme_has_the_sections_the_runner_writes():
    text = (BENCH.parent / "README.md").read_text()
    for section in ("latest", "standard"):
        assert f"<!-- bench:{section}:start -->" in text
        assert f"<!-- bench:{section}:end -->" in text


SCRIPT = """
import sys
sys.path.insert(0, {bench!r})
from common import save
print("measuring", flush=True)
save({name!r}, {payload!r})
sys.exit({code})
"""


def test_runner_records_each_benchmark_and_goes_on_after_a_failure(tmp_path, monkeypatch):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    good = {"frame_seconds_warm": {"median": 0.5, "min": 0.4, "max": 0.7, "n": 3},
            "frame_seconds_cold": {"median": 2.0, "min": 1.9, "max": 2.1, "n": 3}}
    for name, payload, code in (("drp", good, 0), ("ingest", {"files": 3}, 3)):
        (scripts / f"{name}.py").write_text(textwrap.dedent(SCRIPT.format(
            bench=str(BENCH), name=name, payload=payload, code=code)))
    monkeypatch.setattr(runner, "BENCH", scripts)
    monkeypatch.setattr(runner, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(runner, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(runner, "STEPS", tuple(
        runner.Step(name, f"{name}.py", name, {"quick": []}) for name in ("drp", "ingest")))

    assert runner.main(["--preset", "quick"]) == 1
    [path] = (tmp_path / "results").glob("*.json")
    combined = json.loads(path.read_text())
    drp, ingest = combined["steps"]["drp"], combined["steps"]["ingest"]
    assert drp["exit_code"] == 0 and drp["result"]["frame_seconds_warm"]["median"] == 0.5
    assert drp["peak_gb"] >= 0 and Path(drp["log"]).read_text() == "measuring\n"
    assert ingest["exit_code"] == 3 and "measuring" in ingest["log_tail"]
    markdown = path.with_suffix(".md").read_text()
    assert "| DRP | raw frame -> cube, warm worker (1 core) | 500 ms |" in markdown
    assert "**Failed:** ingest" in markdown
    assert "| DRP | the whole benchmark (all its runs and set-up) |" in markdown
    assert runner.render(runner.collect([path])) == markdown

    (scripts / "ingest.py").write_text(textwrap.dedent(SCRIPT.format(
        bench=str(BENCH), name="ingest", payload={"files": 3}, code=0)))
    (scripts / "drp.py").write_text("raise SystemExit('must not run again')\n")
    earlier = path.with_name("2026-01-02-" + path.name.split("-", 3)[3])   # a run of days ago
    path.rename(earlier)
    assert runner.main(["--preset", "quick", "--resume"]) == 0
    assert [p.name for p in (tmp_path / "results").glob("*.json")] == [earlier.name]
    combined = json.loads(earlier.read_text())
    assert combined["steps"]["drp"]["result"]["frame_seconds_warm"]["median"] == 0.5
    assert combined["steps"]["ingest"]["exit_code"] == 0 and "date" in combined["steps"]["ingest"]
    with pytest.raises(SystemExit, match="not a --preset standard run"):
        runner.main(["--preset", "standard", "--resume", str(earlier)])


def test_the_make_targets_run_the_runner_with_arguments_it_accepts():
    makefile = (BENCH.parent / "Makefile").read_text()
    for target, preset in (("bench", "standard"), ("bench-quick", "quick")):
        recipe = makefile.split(f"\n{target}: ", 1)[1].split("\n")[1].strip()
        words = recipe.split()
        assert words[1] == "bench/run.py", recipe
        args = [w for w in words[2:] if not w.startswith("$(")]
        assert runner.parse(args).preset == preset


def test_the_runners_variable_is_not_taken_for_a_cruncher_setting():
    """Benchmarks start cruncher processes, which refuse unknown CRUNCHER_* variables."""
    from cruncher.config import load_settings

    common = sys.modules["common"]
    load_settings(search=False, env={common.RESULTS_ENV: "/tmp/results"})
