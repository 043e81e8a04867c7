"""The ``test`` algorithm: a job that does what it is told, to exercise the backend's machinery.

``params["action"]``: ``noop``; ``sleep`` (``seconds``); ``write`` (a small FITS product);
``fail`` (a permanent error); ``retry`` (a retryable error, or success from try ``succeed_on``);
``crash`` (the process kills itself with SIGSEGV); ``hang`` (never ends, and a child of its own
ignores SIGTERM: only a process-group SIGKILL stops both).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from cruncher.errors import BadInputError, RetryableError
from cruncher.psfsub.job import JobFile, Product, Result


def run(job: JobFile) -> Result:
    params = dict(job.params)
    action = params.get("action", "noop")
    result = Result(job_id=job.id)
    if action == "noop":
        return result
    if action == "sleep":
        time.sleep(float(params.get("seconds", 1.0)))
        return result
    if action == "write":
        path = Path(job.outdir) / f"{job.id.replace(':', '_').replace('/', '_')}.fits"
        path.parent.mkdir(parents=True, exist_ok=True)
        fits.writeto(path, np.zeros((4, 4), np.float32), overwrite=True)
        result.products.append(Product(path=str(path), kind=params.get("kind", "test"),
                                       extras={"inputs": list(job.inputs)}))
        return result
    if action == "fail":
        raise BadInputError(job.inputs[0] if job.inputs else job.id,
                            params.get("reason", "told to fail"))
    if action == "retry":
        if job.tries + 1 >= int(params.get("succeed_on", 10**9)):
            return result
        raise RetryableError(params.get("reason", "told to fail, retryably"))
    if action == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if action == "hang":
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"
        subprocess.Popen([sys.executable, "-c", code])
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(3600)
    raise BadInputError(job.id, f"test job: unknown action {action!r}")
