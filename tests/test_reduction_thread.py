"""The reduction thread holds a recipe back while one of an earlier stage is unfinished."""
from __future__ import annotations

import time
from pathlib import Path


from cruncher.backend.reduction import RecipeFinished, RecipeRequest, ReductionThread
from cruncher.recipes import queue
from cruncher.recipes.templates import make_recipe


def _request(kind: str, template: str, name: str, raw: str, out: Path) -> RecipeRequest:
    return RecipeRequest(name=name, recipe=make_recipe(template, [raw], out), kind=kind,
                         raw=(raw,), journal_id=f"recipe:{name}")


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)



def test_an_arc_arriving_with_its_dark_waits_for_it(tmp_path, journal):
    """Two DRP workers would otherwise run the arc beside its dark and fail it."""
    queue_dir, out = tmp_path / "queue", tmp_path / "calibrations"
    finished: list[RecipeFinished] = []
    thread = ReductionThread(queue_dir, tmp_path / "logs", journal=journal,
                             notify=finished.append, scan_s=0.2)
    raw = str(tmp_path / "S20160315S0007.fits")
    # the arc first, submitted together with its dark (as one calibration instruction gives them)
    thread.submit(_request("arc", "quick_wavecal", "b_qwc_S20160315S0007", raw, out),
                  _request("dark", "dark", "a_dark_S20160315S0006", raw, out))
    thread.start()
    try:
        _wait_for(lambda: queue.find(queue_dir, "a_dark_S20160315S0006") is not None)
        time.sleep(0.5)
        assert queue.find(queue_dir, "b_qwc_S20160315S0007") is None
        assert [r.name for r in thread.held] == ["b_qwc_S20160315S0007"]
        # a DRP worker runs the dark: the arc is released once it is done
        working = queue.claim(queue.find(queue_dir, "a_dark_S20160315S0006")[0])
        queue.finish(working, ok=True)
        _wait_for(lambda: queue.find(queue_dir, "b_qwc_S20160315S0007") is not None)
        assert [f.request.name for f in finished] == ["a_dark_S20160315S0006"]
    finally:
        thread.stop()


def test_a_cube_queued_before_its_dark_arrived_is_withdrawn_until_the_dark_is_done(tmp_path,
                                                                                  journal):
    queue_dir, out = tmp_path / "queue", tmp_path / "reduced"
    thread = ReductionThread(queue_dir, tmp_path / "logs", journal=journal,
                             notify=lambda _: None, scan_s=0.2)
    raw = str(tmp_path / "S20160315S0008.fits")
    thread.start()
    try:
        thread.submit(_request("cube", "spectral_science", "c_S20160315S0008", raw, out))
        _wait_for(lambda: queue.find(queue_dir, "c_S20160315S0008") is not None)
        thread.submit(_request("dark", "dark", "a_dark_S20160315S0004", raw, out))
        _wait_for(lambda: queue.find(queue_dir, "a_dark_S20160315S0004") is not None)
        _wait_for(lambda: queue.find(queue_dir, "c_S20160315S0008") is None)
        assert [r.name for r in thread.held] == ["c_S20160315S0008"]
        queue.finish(queue.claim(queue.find(queue_dir, "a_dark_S20160315S0004")[0]), ok=True)
        _wait_for(lambda: queue.find(queue_dir, "c_S20160315S0008") is not None)
    finally:
        thread.stop()


def test_an_arc_failed_for_want_of_a_dark_still_coming_runs_again_after_it(tmp_path, journal):
    """The arc reached a worker before its dark arrived (another instruction): its failure for a
    missing calibration is not final while the dark is being made."""
    queue_dir, logs, out = tmp_path / "queue", tmp_path / "logs", tmp_path / "calibrations"
    logs.mkdir()
    finished: list[RecipeFinished] = []
    thread = ReductionThread(queue_dir, logs, journal=journal, notify=finished.append, scan_s=0.2)
    raw = str(tmp_path / "S20160315S0006.fits")
    arc = "b_qwc_S20160315S0006"
    thread.start()
    try:
        thread.submit(_request("arc", "quick_wavecal", arc, raw, out))
        _wait_for(lambda: queue.find(queue_dir, arc) is not None)
        working = queue.claim(queue.find(queue_dir, arc)[0])
        thread.submit(_request("dark", "dark", "a_dark_S20160315S0005", raw, out))
        _wait_for(lambda: queue.find(queue_dir, "a_dark_S20160315S0005") is not None)
        (logs / "gpi_drp_160315.log").write_text(
            f"2016-03-15 00:52:22 [{arc}] Recipe FAILED: no dark calibration with ITIME=29.1 "
            f"in {out}\n")
        queue.finish(working, ok=False)
        _wait_for(lambda: [r.name for r in thread.held] == [arc])
        assert queue.find(queue_dir, arc) is None and finished == []
        queue.finish(queue.claim(queue.find(queue_dir, "a_dark_S20160315S0005")[0]), ok=True)
        _wait_for(lambda: (queue.find(queue_dir, arc) or (None, None))[1] == queue.WAITING)
        # a second failure is final
        queue.finish(queue.claim(queue.find(queue_dir, arc)[0]), ok=False)
        _wait_for(lambda: [f.request.name for f in finished] == ["a_dark_S20160315S0005", arc])
        assert not finished[1].ok and "no dark calibration" in finished[1].reason
    finally:
        thread.stop()
