"""Real QEMU guests: skipped with the reason where root, QEMU or the guest kernel is missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import missing, world  # noqa: F401 — the same sandbox fixture

HERE = Path(__file__).resolve().parent


def missing_here() -> str | None:
    if reason := missing():
        return reason
    if shutil.which("qemu-system-x86_64") is None:
        return "e2e tests need qemu-system-x86_64 (apt-get install qemu-system-x86; `make test` does)"
    if not list(Path("/boot").glob("vmlinuz-*")):
        return "e2e tests need a guest kernel in /boot (apt-get install linux-image-cloud-amd64; `make test` does)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = missing_here()
    if reason:
        for item in items:
            if item.path.is_relative_to(HERE):
                item.add_marker(pytest.mark.skip(reason=reason))


def _zombie_children() -> list[str]:
    """Children of this process that have exited and that nobody has waited for."""
    me, out = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            comm_end = (text := stat.read_text()).rindex(")")
        except (OSError, ValueError):
            continue
        state, ppid = text[comm_end + 2 :].split()[:2]
        if state == "Z" and int(ppid) == me:
            out.append(f"{stat.parent.name} {text[text.index('(') : comm_end + 1]}")
    return out


@pytest.fixture(autouse=True)
def no_zombie_left():
    """A guest that vnet started in this process (world.apply) and then stopped is collected: a
    program that uses vnet as a library is left no zombie (process.reap). Zombies from before
    the test are not its own."""
    before = set(_zombie_children())
    yield
    left = [z for z in _zombie_children() if z not in before]
    assert not left, f"exited children of this process nobody waited for: {left}"
