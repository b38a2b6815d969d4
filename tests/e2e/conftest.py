"""Real QEMU guests: skipped with the reason where QEMU or the guest kernel is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import world  # noqa: F401 — the same sandbox fixture

if shutil.which("qemu-system-x86_64") is None:
    pytest.skip("e2e tests need qemu-system-x86_64 (apt-get install qemu-system-x86; `make test` does)", allow_module_level=True)
if not list(Path("/boot").glob("vmlinuz-*")):
    pytest.skip("e2e tests need a guest kernel in /boot (apt-get install linux-image-cloud-amd64; `make test` does)", allow_module_level=True)
