"""The PSF-subtraction queue: dedup, ordering, dependencies, back-off, back-pressure, threads."""
from __future__ import annotations

import itertools
import random
import threading
import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cruncher.backend.jobs import Priority, PsfJob
from cruncher.backend.psf_queue import DependencyFailed, PsfQueue, QueueClosed, QueueFull
from cruncher.errors import PermanentError, RetryableError

_ids = itertools.count()


def job(key: str | None = None, *, id: str | None = None, priority: Priority = Priority.REDUCTION,
        rank: int = 0, family: str = "klip", depends_on: tuple[str, ...] = (),
        not_before: float = 0.0) -> PsfJob:
    job_id = id or f"j{next(_ids)}"
    return PsfJob(id=job_id, key=key or f"key-{job_id}", algorithm="klip" if family == "klip" else "cadi",
                  family=family, priority=priority, dataset="HD95086_H_20131118", outdir="/tmp/out",
                  rank=rank, depends_on=depends_on, not_before=not_before)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def start(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


# --- dedup ------------------------------------------------------------------------------------


def test_a_key_already_waiting_is_refused_and_accepted_again_once_taken():
    q = PsfQueue()
    first = job("ql:HD95086:H")
    assert q.put(first)
    assert not q.put(job("ql:HD95086:H"))
    assert len(q) == 1
    assert q.get(timeout=0) is first
    # Running (or finished) work with that key does not block a new one.
    again = job("ql:HD95086:H")
    assert q.put(again)
    q.mark_done(first.id)
    assert not q.put(job("ql:HD95086:H"))
    assert q.get(timeout=0) is again


def test_an_id_already_waiting_is_refused():
    q = PsfQueue()
    assert q.put(job("a", id="x"))
    assert not q.put(job("b", id="x"))
    assert [row["key"] for row in q.snapshot()] == ["a"]


def test_a_removed_job_frees_its_key():
    q = PsfQueue()
    first = job("k")
    assert q.put(first)
    assert q.remove(first.id)
    assert not q.remove(first.id)
    assert q.put(job("k"))


# --- order ------------------------------------------------------------------------------------


def test_lower_priority_value_runs_first():
    q = PsfQueue()
    jobs = [job(priority=p) for p in (Priority.CALIBRATION, Priority.REDUCTION, Priority.QUICKLOOK,
                                      Priority.FIRST)]
    for j in jobs:
        q.put(j)
    got = [q.get(timeout=0).priority for _ in jobs]
    assert got == [Priority.QUICKLOOK, Priority.FIRST, Priority.REDUCTION, Priority.CALIBRATION]


def test_higher_rank_runs_first_within_a_priority():
    q = PsfQueue()
    low, high, other = job(rank=1), job(rank=5), job(rank=9, priority=Priority.CALIBRATION)
    for j in (other, low, high):
        q.put(j)
    assert [q.get(timeout=0) for _ in range(3)] == [high, low, other]


def test_equal_priority_and_rank_run_in_arrival_order():
    q = PsfQueue()
    jobs = [job(rank=2) for _ in range(20)]
    for j in jobs:
        q.put(j)
    assert [q.get(timeout=0) for _ in jobs] == jobs
    assert q.get(timeout=0) is None


def test_get_takes_only_the_families_asked_for():
    q = PsfQueue()
    klip, cadi = job(family="klip", priority=Priority.QUICKLOOK), job(family="cadi")
    q.put(klip)
    q.put(cadi)
    assert q.get(["cadi"], timeout=0) is cadi
    assert q.get("cadi", timeout=0) is None  # a bare string names one family
    assert q.get(["cadi", "klip"], timeout=0) is klip
    with pytest.raises(ValueError):
        q.get(["contrast"], timeout=0)
    with pytest.raises(ValueError):
        q.get([], timeout=0)


def test_a_put_wakes_the_blocked_getter_of_its_family():
    q = PsfQueue()
    got = {}

    def get(family: str) -> None:
        got[family] = (q.get([family], timeout=5), time.monotonic())

    getters = [start(get, "klip")]  # waits first, so a single notify() would go to it
    time.sleep(0.05)
    getters.append(start(get, "cadi"))
    time.sleep(0.05)
    began = time.monotonic()
    wanted = job(family="cadi")
    q.put(wanted)
    getters[1].join(5)
    assert got["cadi"][0] is wanted and got["cadi"][1] - began < 2
    assert "klip" not in got
    q.close()
    getters[0].join(5)
    assert got["klip"][0] is None


# --- dependencies -----------------------------------------------------------------------------


def test_a_job_waits_until_its_dependencies_are_done():
    q = PsfQueue()
    first = job("cadi", family="cadi")
    contrast = job("contrast", priority=Priority.QUICKLOOK, depends_on=(first.id, "external"))
    q.put(contrast)
    q.put(first)
    assert q.get(timeout=0) is first  # the better-priority contrast job is not runnable yet
    assert q.get(timeout=0) is None
    q.mark_done(first.id)
    assert q.get(timeout=0) is None  # still waiting for "external"
    assert q.snapshot()[0]["waiting_for"] == ["external"]
    q.mark_done("external")
    assert q.get(timeout=0) is contrast


def test_a_job_whose_dependencies_are_already_done_is_runnable_at_once():
    q = PsfQueue()
    q.mark_done("earlier")
    later = job(depends_on=("earlier",))
    q.put(later)
    assert q.get(timeout=0) is later


def test_mark_done_wakes_a_blocked_getter():
    q = PsfQueue()
    dependent = job(depends_on=("base",))
    q.put(dependent)
    got = []
    getter = start(lambda: got.append(q.get(timeout=5)))
    time.sleep(0.05)
    assert got == []
    q.mark_done("base")
    getter.join(5)
    assert got == [dependent]


def test_mark_failed_removes_transitive_dependents_and_nothing_else():
    q = PsfQueue()
    base = job("base")
    child = job("child", depends_on=(base.id,))
    grandchild = job("grandchild", depends_on=(child.id, "other"))
    unrelated = job("unrelated", depends_on=("other",))
    free = job("free")
    for j in (base, child, grandchild, unrelated, free):
        q.put(j)
    assert q.get(timeout=0) is base
    dropped = q.mark_failed(base.id, "KLIP crashed")
    assert {j.id for j in dropped} == {child.id, grandchild.id}
    assert {row["id"] for row in q.snapshot()} == {unrelated.id, free.id}
    assert q.put(job("child"))  # the key is free again
    with pytest.raises(DependencyFailed) as caught:
        q.put(job(depends_on=(grandchild.id,)))
    assert isinstance(caught.value, PermanentError)
    assert caught.value.failed == (grandchild.id,)


def test_a_job_cannot_depend_on_itself():
    with pytest.raises(ValueError):
        PsfQueue().put(job(id="loop", depends_on=("loop",)))


# --- not_before -------------------------------------------------------------------------------


def test_a_retried_job_waits_for_its_not_before_on_the_queue_clock():
    clock = FakeClock()
    q = PsfQueue(clock=clock)
    retried = job("k").retried(not_before=clock.now + 30)
    fresh = job("other", priority=Priority.CALIBRATION)
    q.put(retried)
    q.put(fresh)
    assert q.get(timeout=0) is fresh  # the better job is not due yet
    assert q.get(timeout=0.02) is None
    assert q.snapshot()[0]["runnable"] is False
    assert q.snapshot()[0]["due_in"] == pytest.approx(30)
    clock.now += 30
    assert q.snapshot()[0]["runnable"] is True
    assert q.get(timeout=0) is retried


def test_a_waiting_getter_wakes_when_a_delayed_job_falls_due_without_spinning():
    reads = []

    def clock() -> float:
        reads.append(1)
        return time.monotonic()

    q = PsfQueue(clock=clock)
    got = []
    began = time.monotonic()
    getter = start(lambda: got.append((q.get(timeout=10), time.monotonic())))
    time.sleep(0.05)
    delayed = job(not_before=time.monotonic() + 0.3)
    q.put(delayed)  # the getter must shorten its wait to the job's due time
    getter.join(10)
    assert got and got[0][0] is delayed
    waited = got[0][1] - began
    assert 0.3 <= waited < 2.0
    assert len(reads) < 50  # a handful of timed waits, not a busy loop


# --- capacity and back-pressure ---------------------------------------------------------------


def test_put_blocks_while_full_until_a_get_makes_room():
    q = PsfQueue(capacity=2)
    q.put(job())
    q.put(job())
    last = job()
    done = threading.Event()
    putter = start(lambda: (q.put(last, timeout=5), done.set()))
    assert not done.wait(0.1)  # blocked: the queue is full
    first = q.get(timeout=0)
    assert done.wait(5)
    putter.join(5)
    assert len(q) == 2 and first is not last


def test_put_raises_queue_full_after_its_timeout():
    q = PsfQueue(capacity=1)
    q.put(job())
    began = time.monotonic()
    with pytest.raises(QueueFull) as caught:
        q.put(job(), timeout=0.1)
    assert time.monotonic() - began >= 0.1
    assert isinstance(caught.value, RetryableError)
    with pytest.raises(QueueFull):
        q.put(job(), timeout=0)
    # A duplicate is refused at once, full or not.
    assert q.put(job(q.snapshot()[0]["key"]), timeout=0) is False


def test_mark_failed_makes_room_for_every_blocked_putter_at_once():
    q = PsfQueue(capacity=2)
    q.put(job(id="a", depends_on=("base",)))
    q.put(job(id="b", depends_on=("a",)))
    outcomes = {}

    def put(name: str, key: str) -> None:
        outcomes[name] = (q.put(job(key), timeout=5), time.monotonic())

    # Condition wake-ups go out in waiting order: x1 and x2 get the two free slots' wake-ups; the
    # one that runs second finds the other's job waiting, is refused, and must pass its wake-up on
    # to y.
    putters = []
    for name, key in (("x1", "x"), ("x2", "x"), ("y", "y")):
        putters.append(start(put, name, key))
        time.sleep(0.05)
    began = time.monotonic()
    q.mark_failed("base", "bad cubes")  # frees both slots at once
    for p in putters:
        p.join(5)
    assert sorted([outcomes["x1"][0], outcomes["x2"][0]]) == [False, True]
    assert outcomes["y"][0] is True
    assert max(at for _, at in outcomes.values()) - began < 2, "a putter slept through free room"
    assert len(q) == 2


def test_mark_done_wakes_every_getter_it_gives_work_to():
    q = PsfQueue()
    for _ in range(3):
        q.put(job(depends_on=("base",)))
    got = []
    getters = [start(lambda: got.append((q.get(timeout=5), time.monotonic()))) for _ in range(3)]
    time.sleep(0.05)
    began = time.monotonic()
    q.mark_done("base")
    for g in getters:
        g.join(5)
    assert len(got) == 3 and all(j is not None for j, _ in got)
    assert max(at for _, at in got) - began < 2, "a getter slept through runnable work"


# --- close ------------------------------------------------------------------------------------


def test_close_wakes_getters_and_putters_and_refuses_new_jobs():
    q = PsfQueue(capacity=1)
    q.put(job(depends_on=("never",)))
    results = {}
    getter = start(lambda: results.setdefault("get", q.get(timeout=10)))

    def blocked_put() -> None:
        try:
            q.put(job(), timeout=10)
        except QueueClosed as exc:
            results["put"] = exc

    putter = start(blocked_put)
    time.sleep(0.05)
    began = time.monotonic()
    q.close()
    getter.join(5)
    putter.join(5)
    assert time.monotonic() - began < 2
    assert results["get"] is None and isinstance(results["put"], QueueClosed)
    assert q.closed
    with pytest.raises(QueueClosed):
        q.put(job())


def test_a_closed_queue_still_hands_out_runnable_jobs():
    q = PsfQueue()
    ready = job()
    q.put(ready)
    q.put(job(not_before=time.monotonic() + 60))
    q.close()
    assert q.get(timeout=5) is ready
    assert q.get(timeout=5) is None  # only a job due in a minute is left: do not wait for it


# --- status -----------------------------------------------------------------------------------


def test_snapshot_lists_waiting_jobs_in_run_order_and_depths_count_them():
    clock = FakeClock()
    q = PsfQueue(clock=clock)
    blocked = job("b", priority=Priority.QUICKLOOK, family="cadi", depends_on=("x",))
    later = job("l", priority=Priority.QUICKLOOK, not_before=clock.now + 5)
    low = job("c", priority=Priority.CALIBRATION, rank=3)
    high = job("q", priority=Priority.QUICKLOOK, family="cadi")
    for j in (blocked, later, low, high):
        q.put(j)
    rows = q.snapshot()
    assert [r["id"] for r in rows] == [high.id, low.id, blocked.id, later.id]
    assert rows[0] == {"id": high.id, "key": "q", "algorithm": "cadi", "priority": "QUICKLOOK",
                       "rank": 0, "family": "cadi", "runnable": True, "waiting_for": [],
                       "due_in": 0.0, "tries": 0}
    assert rows[2]["runnable"] is False and rows[2]["waiting_for"] == ["x"]
    assert rows[3]["runnable"] is False and rows[3]["waiting_for"] == []
    assert q.depths() == {"QUICKLOOK": 3, "FIRST": 0, "REDUCTION": 0, "CALIBRATION": 1}
    q.get(timeout=0)
    q.remove(blocked.id)
    assert q.depths()["QUICKLOOK"] == 1 and len(q) == 2


def test_many_removals_keep_the_heaps_consistent():
    q = PsfQueue()
    jobs = [job(rank=i % 7, not_before=0.0 if i % 3 else time.monotonic() - 1) for i in range(3000)]
    for j in jobs:
        q.put(j)
    kept = jobs[::10]
    for j in jobs:
        if j not in kept:
            assert q.remove(j.id)
    expected = sorted(kept, key=lambda j: (-j.rank, jobs.index(j)))
    assert [q.get(timeout=0) for _ in kept] == expected
    assert q.get(timeout=0) is None and len(q) == 0


# --- a model-based test -----------------------------------------------------------------------


KEYS = st.sampled_from("abcdefghij")
FAMILY_FILTERS = st.sampled_from([None, ("cadi",), ("klip",), ("cadi", "klip")])
CAPACITY = 8


class QueueMachine(RuleBasedStateMachine):
    """The queue against a plain list of (seq, job), with done and failed id sets."""

    @initialize()
    def setup(self) -> None:
        self.clock = FakeClock()
        self.q = PsfQueue(capacity=CAPACITY, clock=self.clock)
        self.model: list[tuple[int, PsfJob]] = []
        self.seq = 0
        self.ids: list[str] = ["outside"]  # every id ever used, plus one never put
        self.running: list[str] = []
        self.done: set[str] = set()
        self.failed: set[str] = set()

    def runnable(self, j: PsfJob) -> bool:
        return set(j.depends_on) <= self.done and self.clock.now >= j.not_before

    def expect_put(self, j: PsfJob) -> None:
        if any(w.key == j.key or w.id == j.id for _, w in self.model):
            assert self.q.put(j, timeout=0) is False
        elif self.failed & set(j.depends_on):
            with pytest.raises(DependencyFailed):
                self.q.put(j, timeout=0)
        elif len(self.model) >= CAPACITY:
            with pytest.raises(QueueFull):
                self.q.put(j, timeout=0)
        else:
            assert self.q.put(j, timeout=0) is True
            self.model.append((self.seq, j))
            self.seq += 1

    @rule(key=KEYS, priority=st.sampled_from(Priority), rank=st.integers(0, 2),
          family=st.sampled_from(["cadi", "klip"]), dep=st.none() | st.just(0) | st.integers(0, 4),
          delay=st.sampled_from([0.0, 0.0, -1.0, 5.0]))
    def put(self, key, priority, rank, family, dep, delay) -> None:
        # Depend on a recent id (waiting, running, done, failed or refused): chains form often.
        depends_on = () if dep is None else (self.ids[-1 - min(dep, len(self.ids) - 1)],)
        j = job(key, priority=priority, rank=rank, family=family, depends_on=depends_on,
                not_before=self.clock.now + delay)
        self.ids.append(j.id)
        self.expect_put(j)

    @precondition(lambda self: self.model or self.running)
    @rule(index=st.integers(0, 10**6), key=KEYS, priority=st.sampled_from(Priority),
          family=st.sampled_from(["cadi", "klip"]))
    def put_a_dependent(self, index, key, priority, family) -> None:
        """Depend on a waiting or running job: chains that mark_failed must follow."""
        targets = [j.id for _, j in self.model] + self.running
        j = job(key, priority=priority, family=family, depends_on=(targets[index % len(targets)],))
        self.ids.append(j.id)
        self.expect_put(j)

    @precondition(lambda self: self.model)
    @rule(index=st.integers(0, 10**6), key=KEYS)
    def put_a_waiting_id_again(self, index, key) -> None:
        _, waiting = self.model[index % len(self.model)]
        self.expect_put(job(key, id=waiting.id))

    @rule(families=FAMILY_FILTERS)
    def get(self, families) -> None:
        candidates = [(j.priority, -j.rank, seq, j) for seq, j in self.model
                      if self.runnable(j) and (families is None or j.family in families)]
        got = self.q.get(families, timeout=0)
        if not candidates:
            assert got is None
            return
        best = min(candidates, key=lambda c: c[:3])[3]
        assert got is best
        self.model = [(seq, j) for seq, j in self.model if j is not best]
        self.running.append(best.id)

    @rule(seconds=st.sampled_from([1.0, 5.0]))
    def advance_clock(self, seconds) -> None:
        self.clock.now += seconds

    @rule(index=st.integers(0, 10**6), external=st.booleans())
    def mark_done(self, index, external) -> None:
        # A running job, or any id: an external dependency, a failed job retried elsewhere...
        pool = self.ids if external or not self.running else self.running
        job_id = pool[index % len(pool)]
        if job_id in self.running:
            self.running.remove(job_id)
        self.q.mark_done(job_id)
        self.done.add(job_id)
        self.failed.discard(job_id)

    @precondition(lambda self: self.running)
    @rule(index=st.integers(0, 10**6))
    def mark_failed(self, index) -> None:
        job_id = self.running.pop(index % len(self.running))
        self.done.discard(job_id)
        doomed, gone = {job_id}, set()
        while True:
            more = {j.id for _, j in self.model if doomed & set(j.depends_on)} - gone
            if not more:
                break
            gone |= more
            doomed |= more
        self.model = [(seq, j) for seq, j in self.model if j.id not in gone]
        self.failed |= doomed
        assert {j.id for j in self.q.mark_failed(job_id, "test")} == gone

    @rule(index=st.integers(0, 10**6))
    def remove(self, index) -> None:
        job_id = self.ids[index % len(self.ids)]
        waiting = any(j.id == job_id for _, j in self.model)
        assert self.q.remove(job_id) is waiting
        self.model = [(seq, j) for seq, j in self.model if j.id != job_id]

    @invariant()
    def matches_the_model(self) -> None:
        rows = self.q.snapshot()
        assert len(self.q) == len(self.model) == len(rows)
        keys = [r["key"] for r in rows]
        assert len(set(keys)) == len(keys), "two waiting jobs share a key"
        expected = sorted(self.model, key=lambda m: (not self.runnable(m[1]), m[1].priority,
                                                      -m[1].rank, m[0]))
        assert [r["id"] for r in rows] == [j.id for _, j in expected]
        assert [r["runnable"] for r in rows] == [self.runnable(j) for _, j in expected]
        assert sum(self.q.depths().values()) == len(self.model)


QueueMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestQueueModel = QueueMachine.TestCase


# --- threads ----------------------------------------------------------------------------------


def test_producers_and_consumers_lose_nothing_and_keep_order():
    """6 producers, 4 consumers, a small capacity: every accepted job is got exactly once, duplicates
    of waiting keys are refused, and no consumer takes a job while a better one from the same
    producer had been waiting since before it."""
    q = PsfQueue(capacity=100)
    stamp = itertools.count()  # next() on a count is atomic under the GIL: a global event order
    producers_left = threading.Event()
    accepted: list[list[tuple[PsfJob, int, int]]] = [[] for _ in range(6)]
    refused: list[int] = [0] * 6
    got: dict[str, tuple[int, int]] = {}
    got_twice: list[str] = []
    slowest_put = [0.0]

    def produce(n: int) -> None:
        rng = random.Random(n)
        key = "ds0"
        for i in range(2000 // 6 + (n < 2000 % 6)):
            # More keys than capacity (so the queue can fill), and a fifth of puts repeat the last
            # key at once, as file-sync latency does (so duplicates of waiting keys happen).
            key = key if rng.random() < 0.2 else f"ds{rng.randrange(1000)}"
            j = job(key, id=f"p{n}-{i}", priority=rng.choice(list(Priority)),
                    rank=rng.randrange(2), family=rng.choice(["cadi", "klip"]))
            before, began = next(stamp), time.monotonic()
            ok = q.put(j, timeout=30)
            slowest_put[0] = max(slowest_put[0], time.monotonic() - began)
            if ok:
                accepted[n].append((j, before, next(stamp)))
            else:
                refused[n] += 1

    def consume() -> None:
        while True:
            before = next(stamp)
            j = q.get(timeout=0.01)
            if j is None:
                if producers_left.is_set() and len(q) == 0:
                    return
                continue
            if j.id in got:
                got_twice.append(j.id)
            got[j.id] = (before, next(stamp))
            q.mark_done(j.id)

    producers = [start(produce, n) for n in range(6)]
    time.sleep(0.2)  # let the producers fill the queue and block on it
    consumers = [start(consume) for _ in range(4)]
    for p in producers:
        p.join(30)
    producers_left.set()
    for c in consumers:
        c.join(30)
    assert not any(t.is_alive() for t in producers + consumers)

    all_accepted = [a for per in accepted for a in per]
    assert sum(refused) > 0 and len(all_accepted) + sum(refused) == 2000
    assert slowest_put[0] > 0.1, "back-pressure never happened"
    assert got_twice == []
    assert set(got) == {j.id for j, _, _ in all_accepted}
    assert len(q) == 0

    # Two accepted jobs with one key never waited at the same time: no second put surely fell
    # between the first's put and its get (the stamps bracket the real moments).
    by_key: dict[str, list[tuple[int, int, str]]] = {}
    for j, put_before, put_after in all_accepted:
        by_key.setdefault(j.key, []).append((put_before, put_after, j.id))
    for entries in by_key.values():
        for _, first_put_after, first in entries:
            for second_put_before, second_put_after, _ in entries:
                assert not (second_put_before > first_put_after
                            and second_put_after < got[first][0]), "a key was waiting twice"

    # Order: if producer P put a before b and a is at least as good as b, b must not have been
    # surely taken (its get finished) before a's get even started.
    for per in accepted:
        latest_start_of_better: dict[tuple[int, int], int] = {}
        for j, _, _ in per:
            order = (int(j.priority), -j.rank)
            bound = max((began for o, began in latest_start_of_better.items() if o <= order),
                        default=-1)
            assert got[j.id][1] > bound, f"{j.id} was taken before a better, earlier job"
            latest_start_of_better[order] = max(latest_start_of_better.get(order, -1), got[j.id][0])
