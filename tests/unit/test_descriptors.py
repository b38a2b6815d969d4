"""drivers/ns.reserve_descriptors grows the descriptor table once, ahead of the many descriptors a
run is about to open (read back as the kernel's FDSize, in a process of its own)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import resource, sys
from vnet.drivers import ns
def size():
    return int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('FDSize:')))
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (min(int(sys.argv[2]), hard), hard))
before = size()
ns.reserve_descriptors(int(sys.argv[1]))
print(before, size())
"""


def _sizes(count: int, limit: int) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(count), str(limit)], capture_output=True, text=True, check=True)
    before, after = out.stdout.split()
    return int(before), int(after)


def test_the_table_holds_what_is_reserved_at_once():
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 4096:
        pytest.skip("the hard limit on descriptors is below 4096 here")
    before, after = _sizes(3000, 8192)
    assert before < 3000 <= after


def test_the_table_stops_at_the_limit_on_descriptors():
    before, after = _sizes(3000, 1024)
    assert after == 1024  # as far as the process may open: no error, the rest grows as it always did
