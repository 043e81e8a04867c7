"""Backends on MPI ranks 1-2, instructed by rank 0, under a real ``mpiexec -n 3``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def mpiexec() -> str | None:
    local = Path(sys.executable).parent / "mpiexec"
    return str(local) if local.exists() else shutil.which("mpiexec")


@pytest.mark.skipif(mpiexec() is None and not os.environ.get("CRUNCHER_REQUIRE_MARIADB"),
                    reason="no mpiexec (pip install mpi4py mpich)")
def test_three_ranks_backends_on_ranks_1_and_2(tmp_path):
    result = subprocess.run([mpiexec(), "-n", "3", sys.executable, str(HERE / "mpi_backends.py"),
                             str(tmp_path)], capture_output=True, text=True, timeout=300)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("SUMMARY ")), None)
    assert result.returncode == 0 and line, result.stdout[-2000:] + result.stderr[-3000:]
    summary = json.loads(line[len("SUMMARY "):])
    assert summary["replies"] == {f"r{r}-seq{n}": "accepted" for r in (1, 2) for n in (0, 1)}
    assert summary["results"] == {f"r{r}-seq{n}": [r, "done"] for r in (1, 2) for n in (0, 1)}
    assert all("not valid JSON" in reason for reason in summary["rejected"].values())
    assert summary["duplicate"]["duplicate"] and summary["duplicate_result"] == "done"
    for rank in (1, 2):
        products = list((tmp_path / "shared" / "reduced").glob(f"r{rank}-seq*/*.fits"))
        assert len(products) == 4     # two cADI reductions of each of two sequences
