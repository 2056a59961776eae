"""release_free_heap returns freed heap pages to the OS, run in a fresh process so the heap state is known."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/statm").is_file(),
                                reason="reads the resident set size from /proc (Linux)")

# A freed 16 MB block raises glibc's mmap threshold, so the next 100 blocks of 4 MB come from the heap; all but
# the last (which pins the heap's top, so glibc cannot shrink it by itself) are then freed.
_CHILD = r"""
import json, os
import numpy as np
from suprem_nn.utils.heap import release_free_heap
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
big = np.ones(16 << 20, np.uint8); del big
blocks = [np.ones(4 << 20, np.uint8) for _ in range(100)]
last = blocks[-1]
del blocks
before = rss()
done = release_free_heap()
print(json.dumps({"done": done, "before": before, "after": rss(), "last": int(last[0])}))
"""


def test_freed_heap_memory_leaves_the_process():
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    if not r["done"]:
        pytest.skip("this C library has no malloc_trim")
    assert r["before"] - r["after"] > 300, r  # about 396 MB of freed 4 MB blocks
