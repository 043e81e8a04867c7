"""The built-in DRP's worker processes, started and kept alive by the backend.

In ``builtin`` DRP mode the backend runs N ``cruncher drp worker`` processes on its queue
directory; one that dies is restarted (with backoff if it keeps dying). They are told to die with
the backend, so a backend killed with SIGKILL leaves no orphan behind. In ``external`` mode an
operator runs the IDL GPI DRP on the same queue and nothing is started here.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from cruncher.drp.worker import WorkerConfig

_log = logging.getLogger(__name__)
BACKOFF_S = (1.0, 5.0, 30.0, 120.0)


@dataclass
class _Worker:
    name: str
    proc: subprocess.Popen
    started: float
    restarts: int = 0
    next_start: float = 0.0


class DrpSupervisor:
    def __init__(self, config: WorkerConfig, count: int, *, data_root: str) -> None:
        self.config = config
        self.count = count
        self.data_root = data_root
        self.workers: dict[str, _Worker] = {}

    def _spawn(self, name: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "cruncher", "drp", "worker", "--name", name,
               "--queue", str(self.config.queue_dir), "--calibrations", str(self.config.calibrations),
               "--log-dir", str(self.config.log_dir), "--poll", str(self.config.poll_s),
               "--data-root", self.data_root, "--die-with-parent", "-q"]
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        for i in range(1, self.count + 1):
            name = f"drp-{i}"
            self.workers[name] = _Worker(name=name, proc=self._spawn(name), started=time.monotonic())
        _log.info("started %d DRP workers on %s", self.count, self.config.queue_dir)

    def check(self) -> None:
        """Restart workers that died."""
        now = time.monotonic()
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                continue
            if worker.next_start == 0.0:
                delay = BACKOFF_S[min(worker.restarts, len(BACKOFF_S) - 1)]
                if now - worker.started > 300:   # it had run well for a while: start afresh
                    delay, worker.restarts = BACKOFF_S[0], 0
                worker.next_start = now + delay
                _log.warning("DRP worker %s died (exit %s); restarting in %.0f s", worker.name,
                             worker.proc.returncode, delay)
            elif now >= worker.next_start:
                worker.proc = self._spawn(worker.name)
                worker.started, worker.next_start = now, 0.0
                worker.restarts += 1

    def pids(self) -> set[int]:
        return {w.proc.pid for w in self.workers.values() if w.proc.poll() is None}

    def status(self) -> list[dict]:
        return [{"name": w.name, "pid": w.proc.pid, "alive": w.proc.poll() is None,
                 "restarts": w.restarts} for w in self.workers.values()]

    def stop(self, timeout: float = 8.0) -> None:
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.terminate()
        deadline = time.monotonic() + timeout
        for worker in self.workers.values():
            try:
                worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
