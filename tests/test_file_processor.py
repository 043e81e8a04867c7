"""The FileProcessor's bookkeeping, driven message by message (no DRP, no job processes)."""
from __future__ import annotations

import logging
import queue
from pathlib import Path

from cruncher.backend.file_processor import CubeRegistry, FileProcessor
from cruncher.backend.psf_queue import PsfQueue
from cruncher.backend.reduction import RecipeFinished
from cruncher.messages import Instruction


class Recorder:
    """The FileProcessor's outside world: recipes it submits, events it publishes."""

    def __init__(self, fail: bool = False) -> None:
        self.recipes: list = []
        self.events: queue.Queue = queue.Queue()
        self.fail = fail

    def submit(self, *requests) -> None:
        if self.fail:
            raise RuntimeError("the DRP queue directory vanished")
        self.recipes.extend(requests)

    def finished(self, timeout: float = 10.0):
        """The next InstructionFinished event (others are skipped)."""
        while True:
            event = self.events.get(timeout=timeout)
            if event.type == "finished":
                return event


def processor(journal, tmp_path: Path, world: Recorder) -> FileProcessor:
    fp = FileProcessor(journal=journal, submit_recipe=world.submit, psf_queue=PsfQueue(),
                       cubes=CubeRegistry(), publish=world.events.put,
                       calibrations=tmp_path / "calibrations")
    fp.start()
    return fp


def test_a_full_instruction_on_one_cube_made_earlier_finishes_once(journal, tmp_path, caplog):
    world = Recorder()
    fp = processor(journal, tmp_path, world)
    try:
        raw, outdir = str(tmp_path / "S20160315S0010.fits"), str(tmp_path / "reduced")
        quicklook = Instruction(files=(raw,), outdir=outdir, quicklook=True, psfsub=("cadi",))
        journal.record_instruction(quicklook, check_bad=False)
        fp.submit(quicklook)
        cube = tmp_path / "reduced" / "S20160315S0010_spdc.fits"
        cube.parent.mkdir()
        cube.write_bytes(b"a cube")
        _wait(lambda: world.recipes)
        fp.recipe_finished(RecipeFinished(request=world.recipes[0], ok=True, products=(str(cube),)))
        assert world.finished().job_id == quicklook.id

        full = Instruction(files=(raw,), outdir=outdir, psfsub=("cadi", "klip"))
        journal.record_instruction(full, check_bad=False)
        fp.submit(full)
        event = world.finished()
        assert event.job_id == full.id and event.state == "done"
        assert "too few" in event.summary["failures"]["psfsub"]
        journal.flush()
        assert journal.get(full.id)["state"] == "done"
        assert len(world.recipes) == 1, "the cube was not made again"
        fp.stop()
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        fp.stop()


def test_an_instruction_whose_handling_raises_is_failed_not_left_accepted(journal, tmp_path):
    world = Recorder(fail=True)
    fp = processor(journal, tmp_path, world)
    try:
        ins = Instruction(files=(str(tmp_path / "S20160315S0001.fits"),),
                          outdir=str(tmp_path / "reduced"))
        journal.record_instruction(ins, check_bad=False)
        fp.submit(ins)
        event = world.finished()
        assert event.state == "failed" and "vanished" in event.summary["failures"]["backend"]
        journal.flush()
        row = journal.get(ins.id)
        assert row["state"] == "failed" and "RuntimeError" in row["error"]
        assert fp.is_alive()
    finally:
        fp.stop()


def _wait(condition, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_failed_calibration_recipe_is_announced_as_a_failure(journal, tmp_path, write_frame):
    """Observers hear of a master dark that could not be made, not only of the cubes it spoils."""
    world = Recorder()
    fp = processor(journal, tmp_path, world)
    try:
        darks = tuple(str(write_frame(n, object="Dark", obstype="DARK", obsclass="dayCal"))
                      for n in (1, 2))
        ins = Instruction(files=darks, outdir=str(tmp_path / "calibrations"), mode="cal")
        journal.record_instruction(ins, check_bad=False)
        fp.submit(ins)
        _wait(lambda: world.recipes)
        [dark] = world.recipes
        assert dark.kind == "dark" and dark.raw == darks
        fp.recipe_finished(RecipeFinished(request=dark, ok=False, reason="no usable dark frames"))
        events = []
        while not events or events[-1].type != "finished":
            events.append(world.events.get(timeout=10))
        [failure] = [e for e in events if e.type == "failure"]
        assert failure.stage == "drp" and failure.files == darks
        assert failure.reason == f"dark recipe {dark.name}: no usable dark frames"
        assert events[-1].job_id == ins.id and events[-1].state == "failed"
    finally:
        fp.stop()
