"""Fixtures that build a sandbox of namespaces per test and always remove it, even on failure."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from contextlib import nullcontext
from pathlib import Path

import pytest

from vnet import api, sandbox, spec
from vnet.drivers import ns as nsmod
from vnet.errors import VnetError

from tests import faults

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

if os.geteuid() != 0:
    pytest.skip("integration tests need root: they create network namespaces", allow_module_level=True)
for tool in ("nft", "dnsmasq", "busybox", "nsenter"):
    if shutil.which(tool) is None:
        pytest.skip(f"integration tests need {tool} (run `make test`, which installs it)", allow_module_level=True)


class World:
    """A sandbox plus the topologies applied in it; `close()` removes all of it."""

    def __init__(self, tmp: Path):
        self.name = "t" + secrets.token_hex(3)
        self.state = tmp / "state"
        self.sb = sandbox.create(self.name, state_dir=self.state)
        self.applied: set[str] = set()
        self.procs: list[subprocess.Popen] = []  # vnet runs a test started in the background

    @property
    def host(self) -> str:
        return self.sb.host

    def topo_state(self, name: str) -> Path:
        """A topology's state directory: per target namespace (engine.state_root)."""
        from vnet.engine import state_root

        return state_root(self.state, self.host) / name

    def load(self, example: str):
        return spec.load(EXAMPLES / example)

    def apply(self, topo, fail_at: int | str | None = None):
        """Apply; with `fail_at`, a fault at that point (tests/faults.py) makes it fail."""
        self.applied.add(topo.name)
        try:
            with faults.injected(fail_at=fail_at) if fail_at is not None else nullcontext():
                return api.apply(topo, netns=self.host, state_dir=self.state)
        finally:
            sandbox.settle(self.host)  # new links finish IPv6 address detection: compare only after

    def plan(self, topo):
        return api.plan(topo, netns=self.host, state_dir=self.state)

    def destroy(self, name: str, fail_at: int | str | None = None):
        try:
            with faults.injected(fail_at=fail_at) if fail_at is not None else nullcontext():
                return api.destroy(name, netns=self.host, state_dir=self.state)
        finally:
            sandbox.settle(self.host)  # links a rollback re-created finish IPv6 address detection

    def vnet(self, *args: str, user: int | None = None) -> subprocess.CompletedProcess:
        argv = [str(Path(os.sys.executable).with_name("vnet")), "--netns", self.host, "--state-dir", str(self.state), *args]
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def close(self) -> None:
        errors = []
        for proc in self.procs:  # a test that failed half-way may have left a run going
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for name in self.applied:
            try:
                self.destroy(name)
            except VnetError as exc:
                errors.append(exc)
        # endpoint namespaces of topologies are vnet's; remove any a failed destroy left
        for n in nsmod.listed():
            if any(n.startswith(f"{t}-") for t in self.applied) and n not in self.sb.namespaces:
                nsmod.remove(n)
        sandbox.destroy(self.name, state_dir=self.state)
        if errors:
            raise errors[0]


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()
