"""QEMU's user, not vnet's validation, has the last word on what a guest may open: a topology that
skips the file checks (loaded from text, through the API) and names /etc/shadow as its kernel fails
to start, with QEMU's own error, and leaves the host as it was. The control: the same topology with
a kernel QEMU's user can read starts, as that user, and its taps belong to it."""

from __future__ import annotations

import pwd
import shutil
from pathlib import Path

import pytest
import yaml

from vnet import guest, qemuargs, spec
from vnet.drivers import process
from vnet.errors import VnetError

from tests.integration import snapshot


def _topo(kernel: str):
    doc = {
        "name": "conf",
        "networks": {"lab": {"mode": "isolated", "subnet": "10.78.0.0/24", "dhcp": True}},
        "vms": {"g": {"kernel": kernel, "append": "console=ttyS0 panic=-1", "accel": "tcg", "nics": [{"network": "lab"}]}},
    }
    return spec.load_text(yaml.safe_dump(doc))  # from text: vnet's file checks do not run


def test_qemu_cannot_open_what_its_user_cannot_read(world):
    before = snapshot.take(world.host)
    with pytest.raises(VnetError) as info:
        world.apply(_topo("/etc/shadow"))
    assert "Permission denied" in str(info.value) and "/etc/shadow" in str(info.value), info.value
    assert snapshot.take(world.host) == before
    assert not list((world.state_of("conf")).glob("vm-g.pid"))

    # the control: a kernel QEMU's user may read starts, as that user
    kernel = guest.kernel_path()
    world.apply(_topo(str(kernel)))
    f = qemuargs.files(world.state_of("conf"), "g")
    pid = process.running(f["pid"])
    assert pid is not None
    uid = pwd.getpwnam(qemuargs.DEFAULT_USER).pw_uid
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status, status
    # the pid record is root's, written by vnet; the console is QEMU's user's, in root's directory
    assert f["pid"].stat().st_uid == 0 and f["pid"].stat().st_mode & 0o022 == 0
    assert f["console"].stat().st_uid == uid
    world.destroy("conf")
    assert not Path(f"/proc/{pid}").exists()  # gone and collected: no zombie left to this process, which started it
    assert snapshot.take(world.host) == before


if shutil.which("setpriv") is None:
    pytest.skip("needs setpriv (util-linux)", allow_module_level=True)
