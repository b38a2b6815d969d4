"""Does KVM actually run a guest here? Opening /dev/kvm is not enough: on some hosts a vCPU hangs,
or QEMU cannot set up its vCPU (seen here: "failed to set MSR 0x10a"). Two probes, each in a child
process with a deadline: one `hlt` instruction in a bare VM must exit with KVM_EXIT_HLT, and QEMU
must bring up a KVM machine (paused) and quit cleanly over QMP, as the unprivileged user guests run as."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_RUN = 0xAE80
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_SET_REGS = 0x4090AE82
KVM_EXIT_HLT = 5

PROBE = r"""
import ctypes, fcntl, mmap, os, struct, sys
from vnet.drivers.kvm import *
kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
assert fcntl.ioctl(kvm, KVM_GET_API_VERSION) == 12
vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
mem = mmap.mmap(-1, 0x1000)
mem[0:1] = b"\xf4"  # hlt
addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, struct.pack("IIQQQ", 0, 0, 0x1000, 0x1000, addr))
vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
size = fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE)
run = mmap.mmap(vcpu, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
sregs = bytearray(312)
fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs)
struct.pack_into("Q", sregs, 0, 0)   # cs.base
struct.pack_into("H", sregs, 12, 0)  # cs.selector
fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
regs = [0] * 18
regs[16], regs[17] = 0x1000, 0x2  # rip, rflags
fcntl.ioctl(vcpu, KVM_SET_REGS, struct.pack("18Q", *regs))
fcntl.ioctl(vcpu, KVM_RUN, 0)
sys.exit(0 if struct.unpack_from("I", run, 8)[0] == KVM_EXIT_HLT else 3)
"""


def _as_qemu_user() -> list[str]:
    """The prefix that runs the probe as the user QEMU runs as (it needs /dev/kvm, through the kvm
    group), where vnet is root and that user exists."""
    from vnet import qemuargs

    if os.geteuid() != 0:
        return []
    try:
        return qemuargs.setpriv(qemuargs.run_user())
    except Exception:  # no such user yet: validation names it; probe as we are
        return []


@functools.cache
def usable(timeout: float = 3.0) -> bool:
    if os.environ.get("VNET_ACCEL") in ("tcg", "kvm"):
        return os.environ["VNET_ACCEL"] == "kvm"
    if not os.path.exists("/dev/kvm"):
        return False
    try:
        proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            return False
        qmp = '{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n'
        proc = subprocess.run(
            [*_as_qemu_user(), "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-nodefaults",
             "-display", "none", "-S", "-qmp", "stdio"],
            input=qmp, capture_output=True, text=True, timeout=timeout,
        )
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return False
    return proc.returncode == 0 and "error" not in proc.stderr.lower()
