"""``python -m cruncher.psfsub JOBFILE``: run one PSF-subtraction job and write its result.

Exit status: 0 done; 75 (EX_TEMPFAIL) a retryable failure; 65 (EX_DATAERR) a permanent one.
The reason of a failure is the last line on stderr.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from cruncher.errors import EXIT_PERMANENT, EXIT_RETRYABLE, CruncherError, exit_status_for
from cruncher.psfsub.job import JobFile, Result

_log = logging.getLogger("cruncher.psfsub")


def algorithms() -> dict[str, Callable[[JobFile], Result]]:
    """Every algorithm a job may name (imported lazily: pyKLIP is heavy)."""
    from cruncher.psfsub import contrast, fakes, klip, testjob

    table: dict[str, Callable[[JobFile], Result]] = {"test": testjob.run,
                                                     "contrast": contrast.run_contrast}
    table.update({name: klip.run_klip for name in klip.REDUCTIONS})
    table.update({f"fakes_{t}_{o}": fakes.run_fakes for t in ("L", "T") for o in (0, 45)})
    try:
        from cruncher.psfsub import cadi

        table.update({"cadi": cadi.run_cadi, "cadi_sdi": cadi.run_cadi_sdi})
    except ImportError:   # cADI arrives with its own module
        pass
    return table


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if len(argv) != 1:
        print("usage: python -m cruncher.psfsub JOBFILE", file=sys.stderr)
        return 2
    try:
        job = JobFile.read(argv[0])
        table = algorithms()
        if job.algorithm not in table:
            print(f"unknown algorithm {job.algorithm!r} (this cruncher knows "
                  f"{', '.join(sorted(table))})", file=sys.stderr)
            return EXIT_PERMANENT
        start = time.perf_counter()
        result = table[job.algorithm](job)
        result.timings.setdefault("total_s", time.perf_counter() - start)
        result.write(job.result)
        return 0
    except CruncherError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return exit_status_for(exc)
    except MemoryError:
        # Other jobs may have held the memory: worth another (bounded) try.
        print("MemoryError: out of memory", file=sys.stderr)
        return EXIT_RETRYABLE
    except Exception as exc:  # a bug in an algorithm is a permanent failure of this job
        _log.exception("job failed")
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_PERMANENT


if __name__ == "__main__":
    raise SystemExit(main())
