"""The processing backend: threads that turn instructions into products.

A network interface (websocket, MPI or in-process queue) hands validated instructions to the
FileProcessor; raw frames go to the reduction thread as recipes for a DRP; finished cubes go to a
deduplicating, prioritised PSF-subtraction queue whose jobs run as supervised subprocesses.
Every accepted instruction and every job is journaled in the database's ``jobs`` table before it
is acknowledged, so a restarted backend resumes where it stopped.
"""
