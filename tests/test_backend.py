"""The processing backend with real parts: websockets, DRP workers, subprocess jobs, the journal."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from cruncher.backend import client
from cruncher.backend.backend import Backend
from cruncher.config import load_settings
from cruncher.db import schema

pytestmark = pytest.mark.slow


def settings_for(root: Path, **extra):
    overrides = {"paths.root": str(root), "backend.port": "0", "psfsub.retry_backoff_s": "0.05",
                 "drp.poll_interval_s": "0.05", **{k.replace("__", "."): str(v)
                                                   for k, v in extra.items()}}
    return load_settings(search=False, env={}, overrides=overrides)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finished(subscription, ids: set[str], timeout: float = 120) -> dict[str, str]:
    """Collect InstructionFinished events for ``ids``."""
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while set(states) < ids and time.monotonic() < deadline:
        event = subscription.get(timeout=0.5)
        if event is not None and event.type == "finished" and event.job_id in ids:
            states[event.job_id] = event.state
    assert set(states) == ids, f"only {states} of {ids} finished"
    return states


def jobs(backend_or_engine, kind: str | None = None) -> list[dict]:
    engine = getattr(backend_or_engine, "engine", backend_or_engine)
    query = select(schema.jobs)
    if kind:
        query = query.where(schema.jobs.c.kind == kind)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


@pytest.fixture
def cubes(tmp_path):
    directory = tmp_path / "data" / "reduced" / "HD_95086" / "autoreduced" / "20160315_H_Spec"
    directory.mkdir(parents=True)
    paths = []
    for i in range(3):
        path = directory / f"S20160315S{i + 1:04d}_spdc.fits"
        path.write_bytes(b"not really a cube")
        paths.append(str(path))
    return directory, paths


def cube_instruction(directory, paths, test: dict, **fields) -> dict:
    return {"files": paths, "outdir": str(directory), "level": "cube",
            "psfsub": fields.pop("psfsub", ["cadi", "klip", "contrast"]),
            "params": {"test": test, **fields.pop("params", {})}, **fields}


# --- end to end -------------------------------------------------------------------------------


def test_a_simulated_night_end_to_end_over_the_websocket(tmp_path, sim_night):
    root, truth = sim_night
    data = tmp_path / "data"
    raw = data / "raw"
    shutil.copytree(root / "raw", raw)
    (data / "calibrations").mkdir(parents=True)
    for master in (root / "calibrations").glob("S*E000*.fits"):
        shutil.copy(master, data / "calibrations")
    backend = Backend(settings_for(data, drp__workers=2)).start()
    events = backend.subscribe()
    try:
        url = backend.interface.url
        frames = sorted(raw.glob("*/*.fits"))
        kinds = {p: truth["frames"][p.name]["kind"] for p in frames}
        outdir = data / "reduced" / "HD_95086" / "autoreduced" / "20160315_H_Spec"
        cal = {"files": [str(p) for p, k in kinds.items() if k in ("dark", "arc")], "mode": "cal",
               "outdir": str(data / "calibrations")}
        spec = {"files": [str(p) for p, k in kinds.items() if k == "science"], "mode": "spec",
                "outdir": str(outdir), "psfsub": ["cadi", "klip"],
                "params": {"test": {"action": "write"}}}
        replies = client.send_instructions(url, [cal, spec])
        assert [r.status for r in replies] == ["accepted", "accepted"], replies
        states = finished(events, {r.instruction_id for r in replies}, timeout=180)
        assert set(states.values()) == {"done"}
        cubes = sorted(outdir.glob("*_spdc.fits"))
        assert len(cubes) == 3
        recipes = jobs(backend, "recipe")
        assert sorted(r["state"] for r in recipes) == ["done"] * 6, \
            [(r["key"], r["state"], r["error"]) for r in recipes]     # 2 darks, 1 arc, 3 cubes
        psf = jobs(backend, "psf")
        assert len(psf) == 5 and {j["state"] for j in psf} == {"done"}
        assert all(j["tries"] == 0 for j in psf)
        log = "\n".join(p.read_text() for p in (data / "logs").glob("gpi_drp_*.log"))
        for recipe in recipes:
            assert len(re.findall(rf"\[{re.escape(recipe['key'])}\] Reading recipe", log)) == 1
        # the same instructions again: accepted as duplicates, no new work
        again = client.send_instructions(url, [cal, spec])
        assert all(r.duplicate and r.state == "done" for r in again)
        time.sleep(1.0)
        assert len(jobs(backend, "psf")) == 5 and len(jobs(backend, "recipe")) == 6
        with backend.engine.connect() as conn:
            kinds_recorded = sorted(conn.execute(select(schema.reduced.c.kind)).scalars())
        assert kinds_recorded.count("spdc") == 3 and kinds_recorded.count("test") == 5
        status = client.status(url)
        assert status["instructions"]["done"] == 2 and len(status["drp_workers"]) == 2
    finally:
        backend.stop()


def test_bad_files_are_dropped_and_paths_outside_the_roots_refused(tmp_path, cubes, write_frame):
    from cruncher.db import queries

    directory, paths = cubes
    raw_dir = tmp_path / "data" / "raw" / "131118"
    frames = [str(write_frame(i, directory=raw_dir)) for i in (1, 2)]
    backend = Backend(settings_for(tmp_path / "data", drp__mode="external",
                                   backend__interface="queue")).start()
    try:
        queries.add_note(backend.engine, frames[0], "AO loop open", bad=True, user="t")
        send = backend.interface.send
        reply = send({"files": frames, "outdir": str(directory)})
        assert reply["status"] == "accepted" and reply["dropped"] == [frames[0]]
        reply = send({"files": frames[:1], "outdir": str(directory)})
        assert reply["status"] == "rejected" and "marked bad" in reply["reason"]
        reply = send({"files": ["/etc/passwd"], "outdir": str(directory)})
        assert reply["status"] == "rejected" and "outside the data roots" in reply["reason"]
        reply = send({"files": [str(directory / "missing.fits")], "outdir": str(directory)})
        assert reply["status"] == "rejected" and "no such file" in reply["reason"]
        reply = send({"files": paths, "outdir": str(directory), "mode": "pol"})
        assert reply["status"] == "rejected" and "polarimetry" in reply["reason"]
        assert send("{junk")["status"] == "rejected"
        assert send({"files": paths, "outdir": "relative"})["status"] == "rejected"
    finally:
        backend.stop()


# --- faults -----------------------------------------------------------------------------------


@pytest.fixture
def backend(tmp_path):
    b = Backend(settings_for(tmp_path / "data", drp__mode="external", backend__interface="queue",
                             psfsub__job_timeout_s=5, psfsub__max_tries=3,
                             psfsub__klip_workers=2)).start()
    yield b
    b.stop()


def test_a_crashing_job_is_retried_then_failed(backend, cubes):
    events = backend.subscribe()
    reply = backend.interface.send(cube_instruction(*cubes, {"action": "crash"}, psfsub=["cadi"]))
    assert finished(events, {reply["instruction_id"]}) == {reply["instruction_id"]: "done"}
    psf = jobs(backend, "psf")
    assert {j["state"] for j in psf} == {"failed"} and all(j["tries"] == 2 for j in psf)
    assert all("SIGSEGV" in j["error"] for j in psf)
    ids = {j["id"] for j in psf}
    assert all(len(list((Path(backend.settings.paths.logs) / "jobs").glob(
        f"{i.replace(':', '_')}/try*"))) == 3 for i in ids)


def test_a_hanging_job_is_killed_with_its_whole_process_tree(backend, cubes):
    events = backend.subscribe()
    reply = backend.interface.send(cube_instruction(*cubes, {"action": "hang"}, psfsub=["cadi"]))
    finished(events, {reply["instruction_id"]}, timeout=60)
    psf = jobs(backend, "psf")
    assert {j["state"] for j in psf} == {"failed"}
    assert all("timed out after 5 s" in j["error"] for j in psf)
    time.sleep(0.5)
    leftovers = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"time.sleep(3600)" in cmdline or (b"cruncher.psfsub" in cmdline
                                              and str(backend.settings.paths.logs).encode() in cmdline):
            leftovers.append(proc.name)
    assert not leftovers, f"processes left behind: {leftovers}"


def test_permanent_failure_is_not_retried_and_fails_its_dependents(backend, cubes):
    events = backend.subscribe()
    instruction = cube_instruction(*cubes, {"action": "write"}, psfsub=["contrast"],
                                   params={"test:fakes_T_45": {"action": "fail",
                                                               "reason": "a corrupt cube"}})
    reply = backend.interface.send(instruction)
    finished(events, {reply["instruction_id"]})
    by_name = {json.loads(j["payload"])["params"]["name"]: j for j in jobs(backend, "psf")}
    assert by_name["fakes_T_45"]["state"] == "failed" and by_name["fakes_T_45"]["tries"] == 0
    assert "a corrupt cube" in by_name["fakes_T_45"]["error"]
    assert by_name["contrast"]["state"] == "failed" and "which failed" in by_name["contrast"]["error"]
    assert all(by_name[n]["state"] == "done" for n in ("fakes_L_0", "fakes_L_45", "fakes_T_0"))


def test_a_retryable_failure_succeeds_on_a_later_try(backend, cubes):
    events = backend.subscribe()
    reply = backend.interface.send(cube_instruction(*cubes, {"action": "retry", "succeed_on": 2},
                                                    psfsub=["cadi"]))
    finished(events, {reply["instruction_id"]})
    assert all(j["state"] == "done" and j["tries"] == 1 for j in jobs(backend, "psf"))


def test_quicklook_jobs_are_deduplicated(backend, cubes):
    directory, paths = cubes
    backend.workers.stop()      # nothing runs: jobs pile up in the queue
    for n in range(2, 4):
        reply = backend.interface.send(cube_instruction(directory, paths[:n], {"action": "noop"},
                                                        psfsub=["cadi"], quicklook=True))
        assert reply["status"] == "accepted"
    wait_for(lambda: len(backend.psf_queue) >= 1, 10, "a quicklook job queued")
    time.sleep(0.5)
    waiting = backend.psf_queue.snapshot()
    assert len(waiting) == 1 and waiting[0]["priority"] in (0, "QUICKLOOK")
    backend.journal.flush()
    # the journal does not keep the merged one waiting forever
    assert sorted(j["state"] for j in jobs(backend, "psf")) == ["done", "queued"]


def test_a_drp_worker_killed_mid_recipe_is_replaced_and_the_recipe_redone(tmp_path, reduced_night):
    root, truth, _, _ = reduced_night
    data = tmp_path / "data"
    shutil.copytree(root / "raw", data / "raw")
    shutil.copytree(root / "calibrations", data / "calibrations")   # darks and wavecal ready
    backend = Backend(settings_for(data, drp__workers=1, backend__interface="queue")).start()
    events = backend.subscribe()
    try:
        science = sorted(str(p) for p in (data / "raw").glob("*/*.fits")
                         if truth["frames"][p.name]["kind"] == "science")
        outdir = data / "reduced" / "HD_95086" / "autoreduced" / "20160315_H_Spec"
        reply = backend.interface.send({"files": science, "outdir": str(outdir)})
        qdir = Path(backend.settings.paths.queue)
        wait_for(lambda: list(qdir.glob("*.working.xml")), 60, "a recipe being worked on")
        victim = next(iter(backend.supervisor.pids()))
        os.kill(victim, signal.SIGKILL)
        assert finished(events, {reply["instruction_id"]}, timeout=180)[reply["instruction_id"]] \
            == "done"
        assert len(list(outdir.glob("*_spdc.fits"))) == 3
        assert victim not in backend.supervisor.pids() and len(backend.supervisor.pids()) == 1
        assert all(j["state"] == "done" for j in jobs(backend, "recipe"))
        log = "\n".join(p.read_text() for p in (data / "logs").glob("gpi_drp_*.log"))
        killed = re.findall(rf"\[(\S+)\] claimed by drp-1 \(pid {victim}\)", log)
        interrupted = [n for n in killed if f"[{n}] Recipe done" in log
                       and len(re.findall(rf"\[{n}\] claimed by", log)) == 2]
        assert interrupted, "the recipe the killed worker held was re-queued and run again"
    finally:
        backend.stop()


# --- the backend as a process: SIGKILL and restart, SIGTERM --------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_backend(data: Path, port: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cruncher", "backend", "--data-root", str(data), "--port",
           str(port), "--set", "psfsub.retry_backoff_s=0.05", "--set", "drp.poll_interval_s=0.05",
           *extra]
    # stderr goes to a file, never a pipe: an unread pipe fills up and blocks the backend and its
    # DRP workers (which inherit it) in the middle of a log line
    data.mkdir(parents=True, exist_ok=True)
    stderr = data.parent / f"backend-{port}-{time.monotonic_ns()}.stderr"
    with stderr.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=sink)
    url = f"ws://127.0.0.1:{port}"
    wait_for(lambda: client.ping(url) or proc.poll() is not None, 60, "the backend to listen")
    assert proc.poll() is None, stderr.read_text(errors="replace")[-3000:]
    return proc


def test_sigkill_mid_run_then_restart_completes_everything_exactly_once(tmp_path, sim_night):
    root, truth = sim_night
    data = tmp_path / "data"
    shutil.copytree(root / "raw", data / "raw")
    (data / "calibrations").mkdir(parents=True)
    for master in (root / "calibrations").glob("S*E000*.fits"):
        shutil.copy(master, data / "calibrations")
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    frames = sorted((data / "raw").glob("*/*.fits"))
    kinds = {p: truth["frames"][p.name]["kind"] for p in frames}
    outdir = data / "reduced" / "HD_95086" / "autoreduced" / "20160315_H_Spec"
    instructions = [
        {"files": [str(p) for p, k in kinds.items() if k in ("dark", "arc")], "mode": "cal",
         "outdir": str(data / "calibrations")},
        {"files": [str(p) for p, k in kinds.items() if k == "science"], "outdir": str(outdir),
         "psfsub": ["cadi", "klip"], "params": {"test": {"action": "sleep", "seconds": 1.5}}},
    ]
    first = start_backend(data, port, "--drp-workers", "1")
    replies = client.send_instructions(url, instructions)
    assert all(r.status == "accepted" for r in replies)
    qdir = data / "queue"
    wait_for(lambda: list(qdir.glob("c_*.done.xml")), 120, "a first cube")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    time.sleep(1.0)
    engine_url = f"sqlite:///{data / 'cruncher.db'}"
    from cruncher.db.engine import make_engine

    engine = make_engine(engine_url)
    before = {j["id"]: j["state"] for j in jobs(engine)}
    done_before = {k for k, v in before.items() if v == "done"}
    # the DRP workers die with their backend (after finishing the recipe in hand)
    def no_orphans():
        found = subprocess.run(["pgrep", "-f", f"drp worker.*{data}"], capture_output=True,
                               text=True)
        return found.stdout.strip() == ""
    wait_for(no_orphans, 30, "the DRP workers of the killed backend to exit")
    second = start_backend(data, port, "--drp-workers", "1")
    try:
        def all_done():
            rows = jobs(engine)
            return all(r["state"] in ("done", "failed") for r in rows) and len(
                [r for r in rows if r["kind"] == "instruction"]) == 2 and rows
        wait_for(all_done, 180, "every instruction and job finished")
        rows = {j["id"]: j for j in jobs(engine)}
        assert {r["state"] for r in rows.values()} == {"done"}
        assert len([r for r in rows.values() if r["kind"] == "psf"]) == 5
        assert len(list(outdir.glob("*_spdc.fits"))) == 3
        log = "\n".join(p.read_text() for p in (data / "logs").glob("gpi_drp_*.log"))
        for job_id in done_before:
            row = rows[job_id]
            if row["kind"] == "recipe":   # finished before the kill: never run again
                assert len(re.findall(rf"\[{re.escape(row['key'])}\] Reading recipe", log)) == 1
            if row["kind"] == "psf":
                tries = list((data / "logs" / "jobs").glob(f"{job_id.replace(':', '_')}/try*"))
                assert len(tries) == 1
        status = client.status(url)
        assert status["instructions"] == {"done": 2}
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=15)


def test_sigterm_stops_within_10_seconds_and_running_jobs_resume_later(tmp_path, cubes):
    directory, paths = cubes
    data = tmp_path / "data"
    port = free_port()
    proc = start_backend(data, port, "--drp", "external")
    replies = client.send_instructions(f"ws://127.0.0.1:{port}", [cube_instruction(
        directory, paths, {"action": "sleep", "seconds": 60}, psfsub=["cadi"])])
    assert replies[0].status == "accepted"
    from cruncher.db.engine import make_engine

    engine = make_engine(f"sqlite:///{data / 'cruncher.db'}")
    wait_for(lambda: any(j["state"] == "running" for j in jobs(engine, "psf")), 30, "a job running")
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert time.monotonic() - start < 10
    assert {j["state"] for j in jobs(engine, "psf")} <= {"queued"}


def test_send_and_status_commands(tmp_path, cubes):
    directory, paths = cubes
    data = tmp_path / "data"
    port = free_port()
    proc = start_backend(data, port, "--drp", "external")
    try:
        url = f"ws://127.0.0.1:{port}"
        lines = tmp_path / "night.jsonl"
        lines.write_text(json.dumps(cube_instruction(directory, paths, {"action": "noop"},
                                                     psfsub=["cadi"])) + "\n"
                         + json.dumps({"files": ["relative.fits"], "outdir": "/x"}) + "\n")
        run = subprocess.run([sys.executable, "-m", "cruncher", "send", str(lines), "--backend",
                              url], capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and "1 accepted, 1 rejected" in run.stderr
        replies = [json.loads(line) for line in run.stdout.splitlines()]
        assert replies[0]["status"] == "accepted" and "absolute" in replies[1]["reason"]
        status = subprocess.run([sys.executable, "-m", "cruncher", "status", "--backend", url],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "instructions:" in status.stdout
        assert "DRP: external" in status.stdout and "PSF queue:" in status.stdout
        down = subprocess.run([sys.executable, "-m", "cruncher", "status", "--backend",
                               f"ws://127.0.0.1:{free_port()}"], capture_output=True, text=True)
        assert down.returncode == 1 and "no backend listening" in down.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_fuzzed_messages_to_the_real_backend_get_replies_and_it_lives(tmp_path, cubes):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    directory, paths = cubes
    backend = Backend(settings_for(tmp_path / "data", drp__mode="external",
                                   backend__max_message_bytes=4096)).start()
    try:
        url = backend.interface.url
        junk = st.one_of(st.text(max_size=300), st.binary(max_size=300),
                         st.dictionaries(st.sampled_from(["files", "outdir", "level", "mode",
                                                          "psfsub", "id", "type", "x"]),
                                         st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                                   st.lists(st.text(max_size=20), max_size=3)),
                                         max_size=5).map(json.dumps),
                         st.just("x" * 10_000))

        @settings(max_examples=40, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(st.lists(junk, min_size=1, max_size=5))
        def fuzz(messages):
            replies = client.send(url, messages)
            assert len(replies) == len(messages)
            assert all(isinstance(r, dict) for r in replies)

        fuzz()
        good = client.send_instructions(url, [cube_instruction(directory, paths, {"action": "noop"},
                                                               psfsub=["cadi"])])
        assert good[0].status == "accepted"
        assert client.status(url)["instructions"]
    finally:
        backend.stop()


def test_a_product_the_database_refuses_is_still_announced_and_its_job_done(backend, cubes,
                                                                               monkeypatch):
    """A failure to record a product (here a database error no write can avoid) is logged; the
    job that made it stays done, the product is announced and the instruction finishes."""
    from sqlalchemy.exc import DataError

    import cruncher.backend.backend as backend_module

    def refuse(*_args, **_kwargs):
        raise DataError("INSERT INTO reduced", {}, Exception("1406 Data too long"))

    monkeypatch.setattr(backend_module, "record_announced", refuse)
    events = backend.subscribe()
    reply = backend.interface.send(cube_instruction(*cubes, {"action": "write"}, psfsub=["cadi"]))
    announced = []
    deadline = time.monotonic() + 60
    state = None
    while state is None and time.monotonic() < deadline:
        event = events.get(timeout=0.5)
        if event is not None and event.type == "product":
            announced.append(event.path)
        if event is not None and event.type == "finished" and event.job_id == reply["instruction_id"]:
            state = event.state
    assert state == "done"
    psf = jobs(backend, "psf")
    assert psf and {(j["state"], j["tries"]) for j in psf} == {("done", 0)}
    assert len([p for p in announced if not p.endswith("_spdc.fits")]) == len(psf)
