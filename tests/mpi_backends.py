"""Run under ``mpiexec -n N``: rank 0 instructs backends on ranks 1..N-1 over the MPI interface.

    mpiexec -n 3 python tests/mpi_backends.py WORKDIR

Each rank > 0 runs a full backend (external DRP, so no DRP workers) on the MPI interface with its
own data root under WORKDIR. Rank 0 sends every rank two cube-level instructions whose PSF jobs
are the ``test`` job (writing a product), a malformed message and a duplicate, collects the
replies and the per-instruction results, shuts the backends down and prints a JSON summary.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mpi4py import MPI


def serve(rank: int, workdir: Path) -> None:
    from cruncher.backend.backend import Backend
    from cruncher.config import load_settings

    root = workdir / f"rank{rank}"
    settings = load_settings(search=False, env={}, overrides={
        "paths.root": str(root), "paths.extra_roots": str(workdir / "shared"),
        "backend.interface": "mpi", "drp.mode": "external", "psfsub.retry_backoff_s": "0.1"})
    backend = Backend(settings).start()
    backend.wait(timeout=120)
    if not backend._stopped.is_set():
        backend.stop()


def control(comm, workdir: Path) -> dict:
    from cruncher.backend.interfaces.mpi import INSTRUCTION, REPLY, RESULT

    size = comm.Get_size()
    cubes_dir = workdir / "shared" / "cubes"
    cubes_dir.mkdir(parents=True, exist_ok=True)
    cubes = []
    for i in range(3):
        cube = cubes_dir / f"S20160315S{i:04d}_spdc.fits"
        cube.write_bytes(b"cube")
        cubes.append(str(cube))
    summary: dict = {"replies": {}, "results": {}, "rejected": {}}
    expected = 0
    for rank in range(1, size):
        for n in range(2):
            ins = {"id": f"r{rank}-seq{n}", "files": cubes, "level": "cube", "psfsub": ["cadi"],
                   "outdir": str(workdir / "shared" / "reduced" / f"r{rank}-seq{n}"),
                   "params": {"test": {"action": "write"}}}
            comm.send(json.dumps(ins), dest=rank, tag=INSTRUCTION)
            reply = json.loads(comm.recv(source=rank, tag=REPLY))
            summary["replies"][ins["id"]] = reply["status"]
            expected += 1
        comm.send("{not json", dest=rank, tag=INSTRUCTION)
        summary["rejected"][rank] = json.loads(comm.recv(source=rank, tag=REPLY))["reason"]
    deadline = time.monotonic() + 90
    while len(summary["results"]) < expected and time.monotonic() < deadline:
        status = MPI.Status()
        if comm.Iprobe(source=MPI.ANY_SOURCE, tag=RESULT, status=status):
            event = json.loads(comm.recv(source=status.Get_source(), tag=RESULT))
            summary["results"][event["job_id"]] = [status.Get_source(), event["state"]]
        else:
            time.sleep(0.01)
    # the same instruction again: a duplicate, reported done at once
    again = {"id": "r1-seq0", "files": cubes, "level": "cube", "psfsub": ["cadi"],
             "outdir": str(workdir / "shared" / "reduced" / "r1-seq0"),
             "params": {"test": {"action": "write"}}}
    comm.send(json.dumps(again), dest=1, tag=INSTRUCTION)
    summary["duplicate"] = json.loads(comm.recv(source=1, tag=REPLY))
    summary["duplicate_result"] = json.loads(comm.recv(source=1, tag=RESULT))["state"]
    for rank in range(1, size):
        comm.send(json.dumps({"type": "shutdown"}), dest=rank, tag=INSTRUCTION)
        comm.recv(source=rank, tag=REPLY)
    return summary


def main() -> int:
    comm = MPI.COMM_WORLD
    workdir = Path(sys.argv[1])
    if comm.Get_rank() == 0:
        summary = control(comm, workdir)
        comm.Barrier()
        print("SUMMARY " + json.dumps(summary), flush=True)
    else:
        serve(comm.Get_rank(), workdir)
        comm.Barrier()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
