"""Helpers for cruncher's own tests and benchmarks: real services, started and cleaned up.

Nothing here is a stand-in: the MariaDB helper runs the real server binary.
"""
