"""Freed memory kept for reuse while the fast engine runs (glibc)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from cruncher.psfsub.fast import heap

pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="needs glibc's allocator")

#: Allocates, fills and frees 64 MB twice; prints the page faults of the second time.
SECOND_FILL_FAULTS = """
import resource, sys
import numpy as np
from cruncher.psfsub.fast import heap
if sys.argv[1] == "keep":
    heap.keep_freed_memory()
elif sys.argv[1] == "after a block":
    with heap.freed_memory_kept():
        np.ones(8 * 2 ** 20)
for time in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    array = np.empty(8 * 2 ** 20)
    array[:] = 1.0
    del array
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_fill_faults(mode: str) -> int:
    return int(subprocess.run([sys.executable, "-c", SECOND_FILL_FAULTS, mode],
                              capture_output=True, text=True, check=True).stdout)


def test_a_freed_array_is_reused_without_faulting_its_pages_in_again():
    faults, default_faults = _second_fill_faults("keep"), _second_fill_faults("default")
    print(f"second 64 MB fill: {faults} page faults with freed memory kept, "
          f"{default_faults} by default")
    assert default_faults >= 32          # at least one per 2 MB page: the array was unmapped
    assert faults < 8


def test_freed_memory_is_given_back_after_the_block():
    assert _second_fill_faults("after a block") >= 32
