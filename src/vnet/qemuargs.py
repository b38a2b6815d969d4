"""QEMU command lines for the VMs of a topology. Pure: topology + facts → argv (the user QEMU runs
as is looked up in the user database, as tap owners are).

Modern syntax only: `-netdev tap,…` paired with `-device virtio-net-pci,netdev=…,mac=…`, never the
deprecated `-net nic -net tap`. vhost where /dev/vhost-net exists; multiqueue when cpus > 1.

QEMU never runs as root. `setpriv` switches to an unprivileged user (default `vnet-qemu`) before
QEMU is executed, so every file a topology names (kernel, initrd, disk and its backing chain) is
opened by that user and the kernel enforces what it may read; the VM's taps are owned by that user,
so QEMU opens them without CAP_NET_ADMIN. QEMU's own `-runas` (`-run-with user=` since 9.0) was
tried and rejected: it switches only after every file is opened as root, and it cannot coexist with
the full seccomp sandbox (`elevateprivileges=deny` makes its setuid fail, `spawn=deny` kills
`-daemonize`'s fork: measured with QEMU 7.2, exit 1 and SIGSYS). This is how libvirt starts QEMU.

What vnet itself provides is handed over as open file descriptors, because the state directory is
root's alone: the QMP and agent sockets (listening, made by vnet), the console log, and the kernel
and initrd of the tiny test guest. Their numbers are fixed (`FD_*`), so the command line is the same
on every run and can be compared with the running one.
"""

from __future__ import annotations

import functools
import os
import pwd
import stat
from typing import TYPE_CHECKING, NamedTuple

from vnet import names
from vnet.errors import VnetError

if TYPE_CHECKING:
    from pathlib import Path

    from vnet.spec.models import Topology


def nic_mac(topo: Topology, vm_name: str, index: int) -> str:
    nic = topo.vms[vm_name].nics[index]
    return nic.mac or names.mac(topo.name, vm_name, str(index))


def nic_tap(topo: Topology, vm_name: str, index: int) -> str:
    nic = topo.vms[vm_name].nics[index]
    return nic.ifname or names.vm_tap(topo.name, vm_name, index)


def queues(topo: Topology, vm_name: str) -> int:
    return min(topo.vms[vm_name].cpus, 8)


def nic_args(topo: Topology, vm_name: str, vhost: bool) -> list[str]:
    vm = topo.vms[vm_name]
    q = queues(topo, vm_name)
    args: list[str] = []
    for i, _ in enumerate(vm.nics):
        netdev = f"tap,id=net{i},ifname={nic_tap(topo, vm_name, i)},script=no,downscript=no"
        device = f"virtio-net-pci,netdev=net{i},mac={nic_mac(topo, vm_name, i)}"
        if vhost:
            netdev += ",vhost=on"
        if q > 1:
            netdev += f",queues={q}"
            device += f",mq=on,vectors={2 * q + 2}"
        args += ["-netdev", netdev, "-device", device]
    return args


BRIDGE_HELPER = "/usr/lib/qemu/qemu-bridge-helper"  # Debian's qemu-system-common
BRIDGE_CONF = "/etc/qemu/bridge.conf"


def bridge_helper_args(topo: Topology, vm_name: str, helper: str = BRIDGE_HELPER) -> list[str]:
    """The VM's NICs for QEMU run by an ordinary user: `-netdev bridge` makes the tap through
    qemu-bridge-helper (setuid root, allowed bridges in /etc/qemu/bridge.conf) instead of opening
    vnet's tap; the MAC is the one the file gives (or derives), so leases and reservations hold."""
    from vnet.facts import bridge_name

    args: list[str] = []
    for i, nic in enumerate(topo.vms[vm_name].nics):
        br = bridge_name(topo, nic.network)
        args += ["-netdev", f"bridge,id=net{i},br={br},helper={_opt(helper)}",
                 "-device", f"virtio-net-pci,netdev=net{i},mac={nic_mac(topo, vm_name, i)}"]
    return args


def bridge_conf_lines(topo: Topology, vm_name: str) -> list[str]:
    """What /etc/qemu/bridge.conf must hold for `bridge_helper_args`: one `allow` per bridge."""
    from vnet.facts import bridge_name

    out: list[str] = []
    for nic in topo.vms[vm_name].nics:
        line = f"allow {bridge_name(topo, nic.network)}"
        if line not in out:
            out.append(line)
    return out


VNC_AUTO_FIRST, VNC_AUTO_SLOTS = 10000, 4000  # chosen displays: ports 15900–19899, clear of X11 (6000+) and 8080


def vnc_displays(topo: Topology) -> dict[str, int]:
    """VM name → its VNC display number, for the VMs with `display: vnc` or `vnc:N`. A chosen
    number is stable: a hash of topology and VM name, so the same VM gets the same port on every
    apply and VMs of other topologies in the same target rarely meet it; within the topology,
    a taken number moves to the next free one (VMs in name order, pinned `vnc:N` first)."""
    out: dict[str, int] = {}
    for name, vm in topo.vms.items():
        if vm.display.startswith("vnc:"):
            out[name] = int(vm.display[4:])
    taken = set(out.values())
    for name in sorted(topo.vms):
        if topo.vms[name].display != "vnc":
            continue
        slot = int.from_bytes(names.sha256(f"{topo.name}/{name}".encode()).digest()[:4], "big") % VNC_AUTO_SLOTS
        while VNC_AUTO_FIRST + slot in taken:
            slot = (slot + 1) % VNC_AUTO_SLOTS
        out[name] = VNC_AUTO_FIRST + slot
        taken.add(out[name])
    return out


def vnc_port(display: int) -> int:
    from vnet.spec.models import VNC_BASE_PORT

    return VNC_BASE_PORT + display


def display_args(topo: Topology, vm_name: str) -> list[str]:
    """`-vnc` on loopback only (what reaches it is the target namespace's own processes, or an
    SSH tunnel), with a VGA device to show: `-nodefaults` leaves the machine without one."""
    n = vnc_displays(topo).get(vm_name)
    if n is None:
        return []
    return ["-vnc", f"127.0.0.1:{n}", "-device", "VGA"]


def _opt(value: str) -> str:
    return value.replace(",", ",,")  # QEMU's escape for a comma inside an option value


def files(state: Path, vm_name: str) -> dict[str, Path]:
    """The VM's files in the state directory. `pid` is written by vnet (the pid it started), never
    by QEMU; `log` is QEMU's stderr; `argv` the record of what was started; `console` the serial
    console's log and `serial` its socket (`vnet vm console`); `stopped` marks a VM that `vnet vm
    stop` stopped (apply leaves it stopped until `vnet vm start`)."""
    from pathlib import Path  # here: `vnet validate` imports this module, and goes without pathlib

    base = state / f"vm-{vm_name}"
    return {k: Path(f"{base}.{k}") for k in ("pid", "console", "serial", "agent", "qmp", "argv", "log", "stopped")}


TINY_APPEND = "console=ttyS0 quiet panic=-1 rdinit=/init"

DEFAULT_USER = "vnet-qemu"
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
# descriptors QEMU finds open: made by vnet, named in the command line by number
FD_QMP, FD_AGENT, FD_CONSOLE, FD_KERNEL, FD_INITRD, FD_SERIAL = 3, 4, 5, 6, 7, 8
ADD_USER = "useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin"


class RunAs(NamedTuple):  # not a dataclass: `vnet validate` imports this module, and dataclasses costs ~7 ms
    """The unprivileged user a VM's QEMU runs as."""

    name: str
    uid: int
    gid: int


def user_problem(value: object = None) -> tuple[str, str] | None:
    """What is wrong with a VM's `user:` on this host, as (message, fix); None when it is usable."""
    try:
        run_user(value)
    except _NoUser as exc:
        return exc.args[0], exc.args[1]
    return None


class _NoUser(VnetError):
    def __str__(self) -> str:
        return f"{self.args[0]} — {self.args[1]}"


def run_user(value: object = None) -> RunAs:
    """The user named by a VM's `user:` (a name or a uid; default `vnet-qemu`). VnetError when the
    host has no such user, or when it is root."""
    text = DEFAULT_USER if value is None else str(value)
    try:
        pw = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except (KeyError, OverflowError, ValueError):
        if value is None:
            raise _NoUser(
                f"no user {DEFAULT_USER!r} on this host (the user QEMU runs as by default)",
                f"`make setup` creates it, or `{ADD_USER} {DEFAULT_USER}`; or set user: to an unprivileged user",
            ) from None
        raise _NoUser(f"no user {text!r} on this host", "create it, or name another unprivileged user") from None
    if pw.pw_uid == 0 or pw.pw_gid == 0:
        raise _NoUser(f"{text!r} is root (uid {pw.pw_uid}, gid {pw.pw_gid})", "QEMU must run as an unprivileged user; omit user: for vnet-qemu")
    return RunAs(pw.pw_name, pw.pw_uid, pw.pw_gid)


def user_groups(user: RunAs) -> set[int]:
    """The user's gids: its primary group and every group that lists it (what --init-groups sets)."""
    return set(os.getgrouplist(user.name, user.gid))


def can_open(st: os.stat_result, user: RunAs, groups: set[int], want: int) -> bool:
    """Whether the permission bits grant `user` the access `want` (os.R_OK | os.W_OK | os.X_OK),
    as the kernel judges them (owner bits, else group bits, else others'). ACLs are not read."""
    mode = st.st_mode
    if st.st_uid == user.uid:
        bits = (mode >> 6) & 7
    elif st.st_gid in groups:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def device_usable(path: str, user: RunAs) -> bool:
    """Whether `user` may open a device node such as /dev/vhost-net or /dev/kvm for reading and writing."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and can_open(st, user, user_groups(user), os.R_OK | os.W_OK)


@functools.cache
def sandbox_built_in(binary: str = "qemu-system-x86_64") -> bool:
    """Whether this QEMU has seccomp: without it, `-sandbox` is refused while options are parsed,
    before `-version` is reached."""
    import subprocess  # here: `vnet validate` imports this module, and goes without subprocess

    try:
        proc = subprocess.run([binary, "-sandbox", "on", "-version"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def setpriv(user: RunAs) -> list[str]:
    """Become `user` (its groups included), with no capabilities left and none to gain."""
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


def inputs(topo: Topology, vm_name: str, tiny: tuple[str, str] | None = None) -> dict[str, str]:
    """Files vnet opens itself and passes by descriptor (number → path): the tiny guest's kernel
    and initrd, which vnet built or chose, so their paths need not be reachable by QEMU's user."""
    if topo.vms[vm_name].image != "tiny":
        return {}
    if tiny is None:
        raise ValueError("the tiny guest was not built")
    return {str(FD_KERNEL): tiny[0], str(FD_INITRD): tiny[1]}


def disk_format(path: str) -> str:
    return "qcow2" if path.endswith(".qcow2") else "raw"  # never probed: a raw image can pose as qcow2


def argv(
    topo: Topology, vm_name: str, state: Path, kvm: bool, vhost: bool, tiny: tuple[str, str] | None = None,
    user: RunAs | None = None, sandbox: bool | None = None,
) -> list[str]:
    vm = topo.vms[vm_name]
    if vm.image == "tiny":
        if tiny is None:
            raise ValueError("the tiny guest was not built")
        vm = vm.model_copy(update={"kernel": f"/dev/fd/{FD_KERNEL}", "initrd": f"/dev/fd/{FD_INITRD}", "append": TINY_APPEND})
    if user is None:
        user = run_user(vm.user)
    if sandbox is None:
        sandbox = sandbox_built_in()
    f = files(state, vm_name)
    accel = {"kvm": "kvm", "tcg": "tcg"}.get(vm.accel) or ("kvm" if kvm else "tcg")
    out = [
        *setpriv(user),
        "qemu-system-x86_64",
        "-name", f"{topo.name}-{vm_name}",
        "-machine", "q35",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-m", vm.memory,
        "-smp", str(vm.cpus),
        "-nodefaults", "-no-user-config", "-display", "none",
    ]
    if vm.kernel:
        out += ["-kernel", vm.kernel]
        if vm.initrd:
            out += ["-initrd", vm.initrd]
        if vm.append:
            out += ["-append", vm.append]
    if vm.disk:
        out += ["-drive", f"file={_opt(vm.disk)},if=virtio,format={disk_format(vm.disk)}"]
    out += nic_args(topo, vm_name, vhost)
    out += display_args(topo, vm_name)
    if sandbox:
        out += ["-sandbox", SANDBOX]
    out += [
        # ttyS0: the console, a listening socket for `vnet vm console` (one client at a time),
        # everything it prints also kept as a log (a file vnet made and gave to QEMU's user)
        "-chardev", f"socket,id=console,fd={FD_SERIAL},server=on,wait=off,logfile=/dev/fd/{FD_CONSOLE}",
        "-serial", "chardev:console",
        # ttyS1: a guest agent may listen here; both sockets listen already, made by vnet
        "-chardev", f"socket,id=agent,fd={FD_AGENT},server=on,wait=off", "-serial", "chardev:agent",
        "-chardev", f"socket,id=qmp,fd={FD_QMP},server=on,wait=off", "-mon", "chardev=qmp,mode=control",
        # inert: names vnet's pid record in the command line, so the process is known as this
        # VM's even when a crash left no record (the mark process.kill_named looks for)
        "-object", f"secret,id=vnet-pidfile,data={_opt(str(f['pid']))}",
    ]
    return out
