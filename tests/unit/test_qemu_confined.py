"""QEMU confined: its command line (unprivileged user, seccomp sandbox, descriptors instead of paths
into the state directory), and the validation of the files a VM boots from, against real files,
real users and the real qemu-img (issue 12, item 3)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from vnet import qemuargs, spec
from vnet.desired import desired
from vnet.facts import HostFacts
from vnet.errors import SpecError, VnetError

STATE = Path("/tmp/x")
ROOT = os.geteuid() == 0
HAS_USER = qemuargs.user_problem() is None
needs_root = pytest.mark.skipif(not ROOT, reason="needs root: files owned by another user, qemu-img as vnet-qemu")
needs_user = pytest.mark.skipif(not HAS_USER, reason="needs the vnet-qemu user (`make setup` as root creates it)")
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img (apt-get install qemu-utils)")


def topo_doc(vm: dict, name: str = "lab") -> dict:
    return {
        "name": name,
        "networks": {"lan0": {"mode": "nat", "subnet": "192.168.70.0/24", "uplink": "eth0", "dhcp": {}}},
        "vms": {"v": {"nics": [{"network": "lan0"}], **vm}},
    }


def load_text(vm: dict):
    return spec.load_text(yaml.safe_dump(topo_doc(vm)))


@pytest.fixture
def shared_dir():
    """A directory anyone may search (the way to a VM's files must be open to QEMU's user)."""
    d = Path(tempfile.mkdtemp(prefix="vnet-qemu-test-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def write_topology(d: Path, vm: dict) -> Path:
    p = d / "topo.yaml"
    p.write_text(yaml.safe_dump(topo_doc(vm)))
    return p


def problems_of(path: Path) -> list:
    with pytest.raises(SpecError) as info:
        spec.load(path)
    for p in info.value.problems:
        assert "\n" not in str(p)  # one line each
    return info.value.problems


# --- the command line ----------------------------------------------------------------------------

USER = qemuargs.RunAs("vnet-qemu", 995, 995)


def tiny_topo():
    return load_text({"image": "tiny"})


def test_qemu_is_executed_as_the_unprivileged_user_with_nothing_to_gain():
    argv = qemuargs.argv(tiny_topo(), "v", STATE, kvm=False, vhost=False, tiny=("/k", "/i"), user=USER, sandbox=True)
    prefix = argv[: argv.index("--") + 1]
    assert prefix == ["setpriv", "--reuid=995", "--regid=995", "--init-groups", "--inh-caps=-all",
                      "--bounding-set=-all", "--no-new-privs", "--"]
    assert argv[len(prefix)] == "qemu-system-x86_64"
    # neither QEMU's own switch (it would open every file as root first) nor its fork
    for opt in ("-runas", "-run-with", "-daemonize", "-pidfile", "-chroot"):
        assert opt not in argv


def test_sandbox_denies_everything_where_qemu_has_it():
    on = qemuargs.argv(tiny_topo(), "v", STATE, kvm=False, vhost=False, tiny=("/k", "/i"), user=USER, sandbox=True)
    assert on[on.index("-sandbox") + 1] == "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
    off = qemuargs.argv(tiny_topo(), "v", STATE, kvm=False, vhost=False, tiny=("/k", "/i"), user=USER, sandbox=False)
    assert "-sandbox" not in off


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
def test_sandbox_detection_asks_the_installed_qemu():
    # Debian's QEMU is built with seccomp; a binary that refuses `-sandbox` is detected as such
    assert qemuargs.sandbox_built_in() is True
    assert qemuargs.sandbox_built_in("false") is False


def test_no_path_into_the_state_directory_reaches_qemu():
    argv = qemuargs.argv(tiny_topo(), "v", STATE, kvm=False, vhost=False, tiny=("/k", "/i"), user=USER, sandbox=True)
    into_state = [a for a in argv if str(STATE) in a]
    # only the inert mark naming vnet's pid record, by which vnet knows the process
    assert into_state == [f"secret,id=vnet-pidfile,data={STATE}/vm-v.pid"]


def test_user_names_must_exist_and_not_be_root():
    for root in ("root", "0"):
        with pytest.raises(VnetError, match="root"):
            qemuargs.run_user(root)
    with pytest.raises(VnetError, match="no user 'no-such-user-vq'"):
        qemuargs.run_user("no-such-user-vq")


def test_validation_names_a_missing_or_root_user():
    for value, text in (("no-such-user-vq", "no user"), ("root", "root"), (0, "root")):
        with pytest.raises(SpecError) as info:
            load_text({"image": "tiny", "user": value})
        assert [p.path for p in info.value.problems] == ["vms.v.user"], info.value
        assert text in str(info.value)


@needs_user
def test_vm_taps_are_owned_by_qemus_user():
    nobody = pwd.getpwnam("nobody").pw_uid
    facts = HostFacts(default_uplink="eth0", state=STATE, tiny_guest=("/k", "/i"))
    for vm, uid in (({"image": "tiny"}, pwd.getpwnam("vnet-qemu").pw_uid), ({"image": "tiny", "user": "nobody"}, nobody)):
        rs = desired(load_text(vm), facts)
        taps = [r for r in rs if r.kind == "tap"]
        assert taps and all(r.get("owner") == uid for r in taps)
        argv = next(r for r in rs if r.kind == "vm").get("argv")
        assert f"--reuid={uid}" in argv


def test_permission_bits_as_the_kernel_reads_them():
    u = qemuargs.RunAs("q", 1000, 1000)

    def st(uid: int, gid: int, mode: int) -> os.stat_result:
        return os.stat_result((stat.S_IFREG | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))

    assert qemuargs.can_open(st(1000, 0, 0o400), u, {1000}, os.R_OK)
    assert not qemuargs.can_open(st(1000, 0, 0o044), u, {1000}, os.R_OK)  # owner bits decide for the owner
    assert qemuargs.can_open(st(0, 50, 0o040), u, {1000, 50}, os.R_OK)
    assert not qemuargs.can_open(st(0, 50, 0o604), u, {1000, 50}, os.R_OK)  # group bits decide for a member
    assert qemuargs.can_open(st(0, 0, 0o004), u, {1000}, os.R_OK)
    assert not qemuargs.can_open(st(0, 0, 0o004), u, {1000}, os.R_OK | os.W_OK)


# --- paths: relative to the topology file --------------------------------------------------------


@needs_user
def test_relative_paths_resolve_against_the_topology_file_not_the_working_directory(shared_dir, tmp_path, monkeypatch):
    (shared_dir / "boot").mkdir(mode=0o755)
    (shared_dir / "boot" / "vmlinuz").write_bytes(b"k")
    (shared_dir / "boot" / "vmlinuz").chmod(0o644)
    (shared_dir / "boot" / "initrd").write_bytes(b"i")
    (shared_dir / "boot" / "initrd").chmod(0o644)
    path = write_topology(shared_dir, {"kernel": "boot/vmlinuz", "initrd": "./boot/../boot/initrd"})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "boot").mkdir()  # a decoy where the working directory would have pointed
    topo = spec.load(path)
    assert topo.vms["v"].kernel == str(shared_dir / "boot" / "vmlinuz")
    assert topo.vms["v"].initrd == str(shared_dir / "boot" / "initrd")
    # a file that is not next to the topology is not found, even where the working directory has one
    (tmp_path / "boot" / "other").write_bytes(b"x")
    ps = problems_of(write_topology(shared_dir, {"kernel": "boot/other"}))
    assert [p.path for p in ps] == ["vms.v.kernel"]
    assert str(shared_dir / "boot" / "other") in ps[0].message and "does not exist" in ps[0].message


def test_relative_paths_without_a_file_are_refused():
    with pytest.raises(SpecError) as info:
        load_text({"kernel": "vmlinuz"})
    assert [p.path for p in info.value.problems] == ["vms.v.kernel"]
    assert "relative" in str(info.value)


def test_nul_bytes_in_paths_are_refused():
    with pytest.raises(SpecError) as info:
        load_text({"disk": "/a\0b.raw"})
    assert [p.path for p in info.value.problems] == ["vms.v.disk"]


# --- files QEMU's user cannot open ---------------------------------------------------------------


@needs_root
@needs_user
def test_kernel_etc_shadow_is_refused_as_unreadable(shared_dir):
    ps = problems_of(write_topology(shared_dir, {"kernel": "/etc/shadow"}))
    assert [p.path for p in ps] == ["vms.v.kernel"]
    assert "/etc/shadow is not readable by user vnet-qemu" in ps[0].message


@needs_root
@needs_user
def test_a_readable_kernel_is_accepted_and_the_same_file_made_private_is_not(shared_dir):
    k = shared_dir / "vmlinuz"
    k.write_bytes(b"k")
    k.chmod(0o644)
    path = write_topology(shared_dir, {"kernel": "vmlinuz"})
    assert spec.load(path).vms["v"].kernel == str(k)  # the control: readable → accepted
    k.chmod(0o600)
    ps = problems_of(path)
    assert [p.path for p in ps] == ["vms.v.kernel"] and "not readable" in ps[0].message
    os.chown(k, pwd.getpwnam("vnet-qemu").pw_uid, 0)
    assert spec.load(path)  # owned by QEMU's user: readable again


@needs_root
@needs_user
def test_a_file_behind_a_directory_qemus_user_cannot_search_is_refused(shared_dir):
    private = shared_dir / "private"
    private.mkdir(mode=0o700)
    (private / "vmlinuz").write_bytes(b"k")
    (private / "vmlinuz").chmod(0o644)
    ps = problems_of(write_topology(shared_dir, {"kernel": "private/vmlinuz"}))
    assert [p.path for p in ps] == ["vms.v.kernel"]
    assert f"{private} is not searchable" in ps[0].message


@needs_root
@needs_user
def test_a_disk_must_also_be_writable(shared_dir):
    d = shared_dir / "disk.raw"
    d.write_bytes(b"\0" * 512)
    d.chmod(0o644)
    path = write_topology(shared_dir, {"disk": "disk.raw"})
    ps = problems_of(path)
    assert [p.path for p in ps] == ["vms.v.disk"] and "not readable and writable" in ps[0].message
    os.chown(d, pwd.getpwnam("vnet-qemu").pw_uid, 0)
    assert spec.load(path).vms["v"].disk == str(d)


def _block_device() -> str | None:
    for name in sorted(os.listdir("/dev")):
        if stat.S_ISBLK(os.stat(f"/dev/{name}").st_mode):
            return f"/dev/{name}"
    return None


@needs_user
def test_device_nodes_are_refused_unless_allowed(shared_dir):
    block = _block_device() or "/dev/sda"
    for dev in (block, "/dev/null"):
        if not os.path.exists(dev):
            continue
        ps = problems_of(write_topology(shared_dir, {"disk": dev}))
        assert [p.path for p in ps] == ["vms.v.disk"], ps
        assert f"{dev} is a device node" in ps[0].message and "allow_devices: true" in ps[0].fix
    # the control: allowed, a device QEMU's user may open (/dev/null is 0666) is accepted
    topo = spec.load(write_topology(shared_dir, {"disk": "/dev/null", "allow_devices": True}))
    assert topo.vms["v"].disk == "/dev/null"


@needs_user
def test_directories_are_not_images(shared_dir):
    ps = problems_of(write_topology(shared_dir, {"kernel": str(shared_dir)}))
    assert [p.path for p in ps] == ["vms.v.kernel"] and "not a regular file" in ps[0].message


# --- a qcow2's backing chain ---------------------------------------------------------------------


def _qcow2(path: Path, backing: Path | None = None, fmt: str = "qcow2") -> None:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        argv += ["-b", str(backing), "-F", fmt]
    subprocess.run([*argv, str(path), "1M"], check=True, capture_output=True)


@needs_root
@needs_user
@needs_qemu_img
def test_a_backing_file_qemus_user_cannot_read_is_refused(shared_dir):
    qemu_uid = pwd.getpwnam("vnet-qemu").pw_uid
    base, mid, top = shared_dir / "base.qcow2", shared_dir / "mid.qcow2", shared_dir / "top.qcow2"
    _qcow2(base)
    _qcow2(mid, base)
    _qcow2(top, mid)
    os.chown(top, qemu_uid, 0)
    top.chmod(0o600)
    for f in (base, mid):
        f.chmod(0o644)
    path = write_topology(shared_dir, {"disk": "top.qcow2"})
    assert spec.load(path).vms["v"].disk == str(top)  # the control: the whole chain readable
    base.chmod(0o600)  # the bottom of the chain becomes root's alone
    ps = problems_of(path)
    assert [p.path for p in ps] == ["vms.v.disk"], ps
    assert f"backing file of {mid}: {base} is not readable by user vnet-qemu" in ps[0].message


@needs_root
@needs_user
@needs_qemu_img
def test_a_backing_file_that_is_a_device_is_refused(shared_dir):
    top = shared_dir / "top.qcow2"
    _qcow2(top, Path("/dev/null"), fmt="raw")  # /dev/null: a device QEMU's user can read
    os.chown(top, pwd.getpwnam("vnet-qemu").pw_uid, 0)
    path = write_topology(shared_dir, {"disk": "top.qcow2"})
    ps = problems_of(path)
    assert [p.path for p in ps] == ["vms.v.disk"], ps
    assert "backing file of" in ps[0].message and "/dev/null is a device node" in ps[0].message
    assert spec.load(write_topology(shared_dir, {"disk": "top.qcow2", "allow_devices": True}))


@needs_root
@needs_user
@needs_qemu_img
def test_a_backing_file_given_by_protocol_is_refused(shared_dir):
    top = shared_dir / "top.qcow2"
    _qcow2(top)
    os.chown(top, pwd.getpwnam("vnet-qemu").pw_uid, 0)
    # point it at a network block device without opening it (-u: unsafe rebase)
    with socket.socket() as server:  # were it contacted, the connection would queue here
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", f"nbd://127.0.0.1:{port}/x", "-F", "raw", str(top)], check=True)
        ps = problems_of(write_topology(shared_dir, {"disk": "top.qcow2"}))
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # validation never connected to it
    assert [p.path for p in ps] == ["vms.v.disk"], ps
    assert "is not a local file" in ps[0].message
