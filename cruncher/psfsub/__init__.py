"""Stellar PSF subtraction and contrast, run as jobs: ``python -m cruncher.psfsub JOBFILE``.

A job file (JSON) names the algorithm, the input cubes, the output directory and the parameters;
the job writes its products and a small result file (products, figures, timings) and exits with
0, or with :data:`cruncher.errors.EXIT_RETRYABLE` / :data:`~cruncher.errors.EXIT_PERMANENT`.
A job never talks to the database (supercomputer nodes have none): the backend records results.
"""
