"""QEMU command lines for the VMs of a topology. Pure: topology + facts → argv.

Modern syntax only: `-netdev tap,…` paired with `-device virtio-net-pci,netdev=…,mac=…`, never the
deprecated `-net nic -net tap`. vhost where /dev/vhost-net exists; multiqueue when cpus > 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vnet import names

if TYPE_CHECKING:
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


def _opt(value: str) -> str:
    return value.replace(",", ",,")  # QEMU's escape for a comma inside an option value


def files(state: Path, vm_name: str) -> dict[str, Path]:
    base = state / f"vm-{vm_name}"
    return {k: Path(f"{base}.{k}") for k in ("pid", "console", "agent", "qmp", "argv")}


TINY_APPEND = "console=ttyS0 quiet panic=-1 rdinit=/init"


def argv(topo: Topology, vm_name: str, state: Path, kvm: bool, vhost: bool, tiny: tuple[str, str] | None = None) -> list[str]:
    vm = topo.vms[vm_name]
    if vm.image == "tiny":
        if tiny is None:
            raise ValueError("the tiny guest was not built")
        vm = vm.model_copy(update={"kernel": tiny[0], "initrd": tiny[1], "append": TINY_APPEND})
    f = files(state, vm_name)
    accel = {"kvm": "kvm", "tcg": "tcg"}.get(vm.accel) or ("kvm" if kvm else "tcg")
    out = [
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
        fmt = "qcow2" if vm.disk.endswith(".qcow2") else "raw"
        out += ["-drive", f"file={_opt(vm.disk)},if=virtio,format={fmt}"]
    out += nic_args(topo, vm_name, vhost)
    out += [
        "-serial", f"file:{f['console']}",  # ttyS0: the console, kept as a log
        "-chardev", f"socket,id=agent,path={f['agent']},server=on,wait=off",
        "-serial", "chardev:agent",  # ttyS1: a guest agent may listen here
        "-qmp", f"unix:{f['qmp']},server=on,wait=off",
        "-pidfile", str(f["pid"]),
        "-daemonize",
    ]
    return out
