"""The GPI recipe queue protocol: atomic writes, claims, state renames."""
from __future__ import annotations

import multiprocessing
import os
import random
import threading
from pathlib import Path

import pytest

from cruncher.recipes import Recipe, make_recipe, queue

STATES = ("waiting", "working", "done", "failed")


@pytest.fixture
def qdir(tmp_path) -> Path:
    path = tmp_path / "queue"
    path.mkdir()
    return path


@pytest.fixture
def recipe(tmp_path) -> Recipe:
    return make_recipe("quickcube", ["/data/raw/131118/S20131118S0064.fits"], tmp_path / "reduced")


# --- names and states ----------------------------------------------------------------------


@pytest.mark.parametrize("state", STATES)
def test_state_of_each_state(state, qdir):
    assert queue.state_of(f"001_quickcube_S1.{state}.xml") == ("001_quickcube_S1", state)
    assert queue.state_of(qdir / f"a.b-c.{state}.xml") == ("a.b-c", state)
    assert queue.path_for(qdir, "a.b-c", state) == qdir / f"a.b-c.{state}.xml"


@pytest.mark.parametrize("junk", [
    ".x.waiting.xml", ".x.1a2b3c.tmp", "x.xml", "waiting.xml", ".waiting.xml", "x.pending.xml",
    "x.waiting.xml.bak", "x.waiting.fits", "x.WAITING.xml", "x.waiting", "notes.txt", "x.waitingxml",
])
def test_state_of_junk_is_none(junk):
    assert queue.state_of(junk) is None


def test_path_for_refuses_bad_states_and_names(qdir):
    with pytest.raises(ValueError, match="unknown recipe state 'pending'"):
        queue.path_for(qdir, "x", "pending")
    for name in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="is not a recipe name"):
            queue.path_for(qdir, name, "waiting")


@pytest.mark.parametrize("name", ["", "_x", ".x", "-x", "a b", "a/b", "x.waiting", "x.done.y",
                                  "x.failed", "x.xml", "x.working.xml", "é", "x" * 201])
def test_invalid_names_are_refused(qdir, recipe, name):
    with pytest.raises(ValueError, match="invalid recipe name"):
        queue.queue_recipe(qdir, name, recipe)
    assert os.listdir(qdir) == []


@pytest.mark.parametrize("name", ["a", "001_spdc_S20131118S0064", "x.y-z_1", "Xwaiting", "x" * 200])
def test_valid_names(name):
    assert queue.check_name(name) == name


# --- queueing ------------------------------------------------------------------------------


def test_queue_recipe_writes_the_whole_recipe_and_leaves_no_temp_file(qdir, recipe):
    path = queue.queue_recipe(qdir, "quickcube_S1", recipe)
    assert path == qdir / "quickcube_S1.waiting.xml"
    assert os.listdir(qdir) == ["quickcube_S1.waiting.xml"]
    assert path.read_text(encoding="utf-8") == recipe.to_xml()
    assert Recipe.from_file(path) == recipe
    assert queue.find(qdir, "quickcube_S1") == (path, "waiting")


def test_queue_recipe_takes_text_and_bytes(qdir):
    queue.queue_recipe(qdir, "t", "<recipe>ü</recipe>")
    queue.queue_recipe(qdir, "b", b"<x/>")
    assert (qdir / "t.waiting.xml").read_bytes() == "<recipe>ü</recipe>".encode()
    assert (qdir / "b.waiting.xml").read_bytes() == b"<x/>"
    with pytest.raises(TypeError, match="got int"):
        queue.queue_recipe(qdir, "i", 1)


@pytest.mark.parametrize("state", STATES)
def test_duplicate_names_are_refused_in_any_state(qdir, recipe, state):
    existing = qdir / f"dup.{state}.xml"
    existing.write_text("original")
    with pytest.raises(FileExistsError, match=f"already queued \\({state}\\): {existing}"):
        queue.queue_recipe(qdir, "dup", recipe)
    assert existing.read_text() == "original"
    assert sorted(os.listdir(qdir)) == [existing.name]


def test_a_failed_write_leaves_nothing_behind(qdir, recipe, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(queue.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        queue.queue_recipe(qdir, "x", recipe)
    assert os.listdir(qdir) == []


def test_the_temporary_file_is_hidden_in_the_queue_dir(qdir, recipe, monkeypatch):
    seen = []
    real_link = os.link

    def spy(src, dst):
        seen.append((Path(src), Path(dst), Path(src).read_text()))
        real_link(src, dst)

    monkeypatch.setattr(queue.os, "link", spy)
    queue.queue_recipe(qdir, "x", recipe)
    [(src, dst, content)] = seen
    assert src.parent == qdir and src.name.startswith(".x.") and src.name.endswith(".tmp")
    assert queue.state_of(src) is None and dst == qdir / "x.waiting.xml"
    assert content == recipe.to_xml()
    assert not list(qdir.glob(".*.tmp"))


def test_racing_producers_cannot_overwrite_each_other(qdir, recipe, monkeypatch):
    """Two producers pass the existence check together; the second write must still fail."""
    monkeypatch.setattr(queue, "find", lambda *_: None)
    queue.queue_recipe(qdir, "same", "<recipe>first</recipe>")
    with pytest.raises(FileExistsError):
        queue.queue_recipe(qdir, "same", "<recipe>second</recipe>")
    assert (qdir / "same.waiting.xml").read_text() == "<recipe>first</recipe>"
    assert not list(qdir.glob(".*.tmp"))


def test_a_poller_never_sees_a_partial_recipe(qdir):
    """A reader globbing the queue while large recipes are written only ever reads whole files."""
    bodies = {f"r{n:03d}": (f"<recipe n='{n}'>" + "x" * 300_000 + "</recipe>").encode()
              for n in range(40)}
    done = threading.Event()
    reads, bad = [], []

    def poll() -> None:
        while not done.is_set():
            for path in queue.waiting(qdir):
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                reads.append(path)
                if data != bodies[queue.state_of(path)[0]]:
                    bad.append(path)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for name, body in bodies.items():
            queue.queue_recipe(qdir, name, body)
    finally:
        done.set()
        poller.join()
    assert not bad and reads
    assert [queue.state_of(p)[0] for p in queue.waiting(qdir)] == sorted(bodies)
    assert len(os.listdir(qdir)) == len(bodies)


# --- listing and moving --------------------------------------------------------------------


def test_waiting_is_alphabetical_by_base_name(qdir, recipe):
    names = ["b", "a10", "a2", "001_z", "A", "a", "a.b", "a-b", "a_b", "0"]
    for name in random.Random(1).sample(names, len(names)):
        queue.queue_recipe(qdir, name, recipe)
    for other in ("c.working.xml", "d.done.xml", "e.failed.xml", ".f.waiting.xml", "g.xml",
                  ".g.abc.tmp"):
        (qdir / other).write_text("x")
    (qdir / "dir.waiting.xml").mkdir()
    assert queue.waiting(qdir) == [qdir / f"{n}.waiting.xml" for n in sorted(names)]
    assert [p.name for p in queue.waiting(qdir)][:4] == ["0.waiting.xml", "001_z.waiting.xml",
                                                          "A.waiting.xml", "a.waiting.xml"]
    # by full file name "a.b.waiting.xml" would come before "a.waiting.xml"; by base name, "a" is first
    assert queue.waiting(qdir).index(qdir / "a.waiting.xml") < queue.waiting(qdir).index(
        qdir / "a.b.waiting.xml")


def test_claim_finish_and_requeue(qdir, recipe):
    waiting = queue.queue_recipe(qdir, "r", recipe)
    working = queue.claim(waiting)
    assert working == qdir / "r.working.xml" and not waiting.exists()
    assert queue.claim(waiting) is None
    assert queue.find(qdir, "r") == (working, "working")
    assert queue.waiting(qdir) == []

    back = queue.requeue(working)
    assert back == waiting and queue.find(qdir, "r") == (waiting, "waiting")
    working = queue.claim(back)
    done = queue.finish(working, ok=True)
    assert done == qdir / "r.done.xml" and os.listdir(qdir) == ["r.done.xml"]
    assert done.read_text() == recipe.to_xml()
    assert queue.find(qdir, "r") == (done, "done")

    queue.queue_recipe(qdir, "s", recipe)
    failed = queue.finish(queue.claim(qdir / "s.waiting.xml"), ok=False)
    assert failed == qdir / "s.failed.xml" and queue.find(qdir, "s") == (failed, "failed")
    assert queue.find(qdir, "t") is None


def test_finish_after_requeue_fails_and_requeue_after_finish_fails(qdir, recipe):
    working = queue.claim(queue.queue_recipe(qdir, "r", recipe))
    queue.requeue(working)
    with pytest.raises(FileNotFoundError):
        queue.finish(working, ok=True)
    working = queue.claim(qdir / "r.waiting.xml")
    queue.finish(working, ok=False)
    with pytest.raises(FileNotFoundError):
        queue.requeue(working)
    assert os.listdir(qdir) == ["r.failed.xml"]


def test_moves_refuse_paths_in_the_wrong_state(qdir, recipe):
    waiting = queue.queue_recipe(qdir, "r", recipe)
    with pytest.raises(ValueError, match="is not a working recipe"):
        queue.finish(waiting, ok=True)
    with pytest.raises(ValueError, match="is not a working recipe"):
        queue.requeue(waiting)
    working = queue.claim(waiting)
    with pytest.raises(ValueError, match="is not a waiting recipe"):
        queue.claim(working)
    with pytest.raises(ValueError, match="is not a waiting recipe"):
        queue.claim(qdir / "notes.txt")
    assert os.listdir(qdir) == ["r.working.xml"]


# --- concurrency ---------------------------------------------------------------------------

N_RECIPES = 200
N_WORKERS = 4


def _claim_all(qdir: Path, start: threading.Barrier | None = None) -> list[str]:
    """Claim waiting recipes until none is left; the names this worker won."""
    if start is not None:
        start.wait()
    won = []
    while True:
        pending = queue.waiting(qdir)
        if not pending:
            return won
        for path in pending:
            working = queue.claim(path)
            if working is not None:
                won.append(queue.state_of(working)[0])


def _claim_all_to(qdir: Path, results) -> None:
    results.put(_claim_all(qdir))


def _fill(qdir: Path) -> list[str]:
    names = [f"r{n:04d}" for n in range(N_RECIPES)]
    for name in names:
        queue.queue_recipe(qdir, name, f"<recipe name='{name}'/>")
    return names


def _check_claims(qdir: Path, names: list[str], per_worker: list[list[str]]) -> None:
    claimed = [name for won in per_worker for name in won]
    assert sorted(claimed) == names                # every recipe claimed exactly once
    assert queue.waiting(qdir) == []
    assert sorted(os.listdir(qdir)) == [f"{n}.working.xml" for n in names]


def test_threads_claim_every_recipe_exactly_once(qdir):
    names = _fill(qdir)
    start = threading.Barrier(N_WORKERS)
    results: list[list[str]] = [[] for _ in range(N_WORKERS)]

    def work(i: int) -> None:
        results[i] = _claim_all(qdir, start)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(N_WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _check_claims(qdir, names, results)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_processes_claim_every_recipe_exactly_once(qdir):
    names = _fill(qdir)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_claim_all_to, args=(qdir, results)) for _ in range(N_WORKERS)]
    for worker in workers:
        worker.start()
    per_worker = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    _check_claims(qdir, names, per_worker)
