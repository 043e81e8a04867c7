"""``reprocess``: queries cut into sequences, one instruction each, sent, exported or shown."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cruncher.cli import reprocess_main
from cruncher.db import queries
from cruncher.db.ingest import ingest
from cruncher.db.products import record_product
from cruncher.errors import NoDataError, ValidationError
from cruncher.instructors import reprocessor
from cruncher.instructors.dispatch import Layout
from cruncher.instructors.realtime import Scanner
from cruncher.messages import Instruction


@pytest.fixture
def indexed(engine, night):
    ingest(engine, [night], progress=False)
    return sorted(str(p) for p in night.rglob("*.fits"))


def layout(tmp_path: Path) -> Layout:
    return Layout(reduced=tmp_path / "reduced", calibrations=tmp_path / "calibrations")


def test_a_target_becomes_one_forced_instruction_per_sequence(engine, indexed, tmp_path):
    planned = reprocessor.plan(engine, reprocessor.Query(target="hd_95086"), layout=layout(tmp_path))
    kinds = [p.instruction.mode for p in planned.items]
    assert kinds == ["cal", "spec"]            # its arc snapshot, then its one sequence
    sequence = planned.items[1].instruction
    assert sequence.files == tuple(indexed[3:9]) and sequence.force
    assert sequence.psfsub == ("cadi", "klip", "contrast") and sequence.level == "raw"
    assert "HD 95086 H spec: 6 frames" in planned.items[1].label


def test_reprocessing_a_night_asks_for_what_the_realtime_scanner_asked(engine, indexed, tmp_path):
    """Same sequences, same inputs, same output directories: so the same products."""
    realtime: list[Instruction] = []
    scan = Scanner(engine=engine, layout=layout(tmp_path), send=realtime.extend)
    scan.arrived(indexed)
    scan.close()
    planned = reprocessor.plan(engine, reprocessor.Query(everything=True), layout=layout(tmp_path))
    def strip(ins):
        return (ins.files, ins.outdir, ins.level, ins.mode, ins.psfsub)
    full = [strip(i) for i in realtime if not i.quicklook]
    assert [strip(p.instruction) for p in planned.items] == full


def test_bad_frames_never_count_and_cubes_can_be_reused(engine, indexed, tmp_path):
    queries.add_note(engine, indexed[4], "AO loop open", bad=True)
    for raw in indexed[3:9]:
        record_product(engine, path=tmp_path / "cubes" / (Path(raw).stem + "_spdc.fits"),
                       kind="spdc", inputs=[raw])
    planned = reprocessor.plan(engine, reprocessor.Query(target="HD 95086", band="H"),
                               layout=layout(tmp_path), source="cubes", psfsub=("klip",))
    (item,) = planned.items
    assert item.instruction.level == "cube" and item.instruction.psfsub == ("klip",)
    assert [Path(f).name for f in item.instruction.files] == [
        Path(r).stem + "_spdc.fits" for r in indexed[3:9] if r != indexed[4]]


def test_unknown_targets_and_bands_get_close_matches(engine, indexed, tmp_path):
    with pytest.raises(NoDataError, match="similar name: HD 95086"):
        reprocessor.plan(engine, reprocessor.Query(target="HD 95068"), layout=layout(tmp_path))
    with pytest.raises(NoDataError, match="bands on record for HR 2562: J"):
        reprocessor.plan(engine, reprocessor.Query(target="HR 2562", band="K1"),
                         layout=layout(tmp_path))
    with pytest.raises(ValidationError, match="give a target"):
        reprocessor.plan(engine, reprocessor.Query(), layout=layout(tmp_path))


def test_the_command_shows_exports_and_explains(engine, indexed, db_url, tmp_path, capsys):
    common = ["--db-url", db_url, "--data-root", str(tmp_path)]
    assert reprocess_main(["--target", "HR 2562", "--dry-run", *common]) == 0
    out = capsys.readouterr().out
    assert "HR 2562 J spec: 3 frames" in out and "1 instruction(s) would be sent" in out
    export = tmp_path / "campaign.jsonl"
    assert reprocess_main(["--all", "--export", str(export), *common]) == 0
    lines = [Instruction.from_json(line) for line in export.read_text().splitlines()]
    assert [len(i.files) for i in lines] == [2, 1, 6, 3]
    assert all(json.loads(line)["force"] for line in export.read_text().splitlines())
    assert reprocess_main(["--target", "Nobody", *common]) == 1
    assert "no usable raw frames for target 'Nobody'" in capsys.readouterr().err
    assert reprocess_main(["--date", "20131118", *common]) == 2
    assert "give a target" in capsys.readouterr().err
