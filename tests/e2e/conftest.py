"""Real QEMU guests: skipped with the reason where root, QEMU or the guest kernel is missing."""

from __future__ import annotations

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
