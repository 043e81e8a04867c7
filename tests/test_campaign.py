"""A campaign's instruction file for ``super_cruncher``: phases, relocation, bad lines, done-log."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cruncher.instructors import campaign
from cruncher.messages import Instruction


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def exported(tmp_path) -> Path:
    raw = "/data/raw/160315"
    darks = Instruction(files=(f"{raw}/S20160315S0001.fits", f"{raw}/S20160315S0002.fits"),
                        outdir="/data/calibrations", mode="cal", force=True)
    short = Instruction(files=tuple(f"{raw}/S20160315S{i:04d}.fits" for i in (8, 9)),
                        outdir="/data/reduced/HR_2562/autoreduced/20160315_H_Spec",
                        psfsub=("cadi", "klip", "contrast"), target="HR 2562", band="H")
    long = Instruction(files=tuple(f"{raw}/S20160315S{i:04d}.fits" for i in (4, 5, 6)),
                       outdir="/data/reduced/HD_95086/autoreduced/20160315_H_Spec",
                       psfsub=("cadi", "klip", "contrast"), target="HD 95086", band="H")
    return _write(tmp_path / "campaign.jsonl", [short.to_json(), "{not json", darks.to_json(),
                                                "", json.dumps({"files": []}), long.to_json()])


def test_calibrations_first_then_the_longest_sequences_and_bad_lines_reported(exported):
    loaded = campaign.load(exported, "all")
    assert [t.stage for t in loaded.tasks] == [campaign.DARKS, campaign.SEQUENCES,
                                               campaign.SEQUENCES]
    assert [t.instruction.target for t in loaded.tasks[1:]] == ["HD 95086", "HR 2562"]
    assert [p.split(":")[0] for p in loaded.problems] == ["line 2", "line 5"]


def test_the_cubes_phase_makes_cubes_only(exported):
    tasks = campaign.load(exported, "cubes").tasks
    assert len(tasks) == 3 and all(not t.instruction.psfsub for t in tasks)


def test_the_psfsub_phase_finds_the_cubes_next_to_the_products(exported, tmp_path):
    loaded = campaign.load(exported, "psfsub", remap={"/data": str(tmp_path / "data")})
    assert loaded.tasks == []          # no cubes made yet: said so, per sequence
    assert sum("run --phase cubes" in p for p in loaded.problems) == 2
    outdir = tmp_path / "data" / "reduced" / "HD_95086" / "autoreduced" / "20160315_H_Spec"
    outdir.mkdir(parents=True)
    for i in (4, 5, 6):
        (outdir / f"S20160315S{i:04d}_spdc.fits").write_bytes(b"cube")
    (task,) = campaign.load(exported, "psfsub", remap={"/data": str(tmp_path / "data")}).tasks
    assert task.instruction.level == "cube" and len(task.instruction.files) == 3
    assert task.instruction.files[0] == str(outdir / "S20160315S0004_spdc.fits")


def test_products_can_go_under_another_root_in_the_same_layout(exported, tmp_path):
    tasks = campaign.load(exported, "all", remap={"/data/raw": "/scratch/raw"},
                          outdir="/scratch/out").tasks
    assert tasks[0].instruction.outdir == "/scratch/out/calibrations"
    assert tasks[1].instruction.outdir == "/scratch/out/reduced/HD_95086/autoreduced/20160315_H_Spec"
    assert tasks[1].instruction.files[0] == "/scratch/raw/160315/S20160315S0004.fits"


def test_the_done_log_says_what_resume_skips(exported, tmp_path):
    tasks = campaign.load(exported, "all").tasks
    log = campaign.DoneLog(tmp_path / "done.jsonl")
    assert log.done() == set()
    log.append(tasks[0], "done", rank=1)
    log.append(tasks[1], "failed", rank=2, reason="DRP crashed")
    with open(log.path, "a") as out:
        out.write("half a line")          # the job was killed while writing
    assert log.done() == {tasks[0].id}
    log.append(tasks[1], "done", rank=0)
    assert log.done() == {tasks[0].id, tasks[1].id}
