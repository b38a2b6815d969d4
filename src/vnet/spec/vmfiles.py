"""The files a VM boots from, checked against the host before anything changes.

Relative paths are taken from the topology file's directory (never the working directory). Each
file must be one QEMU's unprivileged user can open (read; the disk also write, as QEMU opens it so),
through directories it may search; device nodes only where the VM says `allow_devices: true`; a
qcow2's backing chain is read by `qemu-img` as that same user and each image in it checked alike.
QEMU opens these files as that user in any case (see qemuargs), so the kernel has the last word:
this is the early, one-line explanation naming the field, instead of QEMU's error at start.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from vnet import qemuargs
from vnet.errors import Problem
from vnet.spec.models import Topology

if TYPE_CHECKING:  # imported where used, by VMs' checks alone: `vnet validate` goes without them (~6 ms)
    import subprocess
    from pathlib import Path

FIELDS = ("kernel", "initrd", "disk")
QEMU_IMG_TIMEOUT = 30.0


def resolve(topo: Topology, base: Path | None) -> Topology:
    """The topology with each VM's relative kernel/initrd/disk made absolute against `base` (the
    topology file's directory). Without a base, relative paths stay (and validation refuses them)."""
    if base is None or not topo.vms:
        return topo
    vms = {}
    for name, vm in topo.vms.items():
        update = {}
        for field in FIELDS:
            value = getattr(vm, field)
            if value and "\0" not in value and not os.path.isabs(value):
                update[field] = os.path.normpath(os.path.join(os.path.abspath(base), value))
        vms[name] = vm.model_copy(update=update) if update else vm
    return topo.model_copy(update={"vms": vms})


def relative(topo: Topology) -> list[Problem]:
    """Pure checks of the paths as written: NUL bytes, paths left relative."""
    problems = []
    for name, vm in topo.vms.items():
        for field in FIELDS:
            value = getattr(vm, field)
            if not value:
                continue
            if "\0" in value:
                problems.append(Problem(f"vms.{name}.{field}", "contains a NUL byte", "write the path without it"))
            elif not os.path.isabs(value):
                problems.append(Problem(f"vms.{name}.{field}", f"relative path {value!r} and no topology file to resolve it against",
                                        "give an absolute path, or load the topology from its file"))
    return problems


def _access_text(want: int) -> str:
    return {os.R_OK: "readable", os.R_OK | os.W_OK: "readable and writable"}.get(want, "usable")


def file_problem(value: str, user: qemuargs.RunAs, groups: set[int], want: int, allow_devices: bool) -> tuple[str, str] | None:
    """What keeps `user` from opening `value` with access `want`, as (message, fix); None if nothing."""
    who = f"user {user.name} (uid {user.uid})"
    try:
        st = os.stat(value)
    except FileNotFoundError:
        return f"{value} does not exist", "check the path (a relative one starts at the topology file's directory)"
    except OSError as exc:
        return f"{value} cannot be examined ({exc.strerror})", "check the path"
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        if not allow_devices:
            return f"{value} is a device node", "boot from an image file, or set allow_devices: true on this VM"
    elif not stat.S_ISREG(st.st_mode):
        return f"{value} is not a regular file", "name an image file"
    from pathlib import Path

    # every directory on the way, as written and after symlinks, must be searchable
    for p in (os.path.abspath(value), os.path.realpath(value)):
        for d in Path(p).parents:
            try:
                dst = os.stat(d)
            except OSError:
                continue
            if not qemuargs.can_open(dst, user, groups, os.X_OK):
                return (f"{value} is out of reach of {who}: {d} is not searchable by it (mode {stat.S_IMODE(dst.st_mode):04o})",
                        f"move the file, or let {user.name} search {d} (chmod o+x), or set user:")
    if not qemuargs.can_open(st, user, groups, want):
        return (f"{value} is not {_access_text(want)} by {who} (owner {st.st_uid}:{st.st_gid}, mode {stat.S_IMODE(st.st_mode):04o})",
                f"chown {user.name} or chmod it so {user.name} can {'read and write' if want & os.W_OK else 'read'} it, or set user:")
    return None


MAX_CHAIN = 16  # images a chain may stand on


def _qemu_img(image: str, fmt: str | None, user: qemuargs.RunAs) -> subprocess.CompletedProcess:
    """`qemu-img info` of one image; its backing file is not opened (nothing is followed before it
    is checked: a backing file may name a network server)."""
    import subprocess

    argv = ["qemu-img", "info", "--output=json", "-U", *(["-f", fmt] if fmt else []), image]
    if os.geteuid() == 0:
        argv = qemuargs.setpriv(user) + argv  # an untrusted image is parsed as QEMU's user
    return subprocess.run(argv, capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT, cwd="/")


def _local(name: object) -> bool:
    # what QEMU takes for a protocol (nbd:, json:, http:): a colon before the first slash
    return isinstance(name, str) and name.startswith("/") and "\0" not in name


def chain_problems(disk: str, user: qemuargs.RunAs, groups: set[int], allow_devices: bool) -> list[tuple[str, str]]:
    """Problems with the images a qcow2 `disk` stands on (backing files, external data files),
    found by walking the chain as `qemu-img info --backing-chain` would, one image at a time."""
    import subprocess

    image, fmt = disk, "qcow2"
    for _ in range(MAX_CHAIN):
        try:
            proc = _qemu_img(image, fmt, user)
        except FileNotFoundError:
            return [("qemu-img is missing, so the backing chain of this qcow2 cannot be checked", "apt-get install qemu-utils")]
        except subprocess.TimeoutExpired:
            return [(f"qemu-img took over {QEMU_IMG_TIMEOUT:.0f}s to read {image}", "check the image")]
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            return [(f"its backing chain cannot be read as user {user.name}: {why}",
                     f"make every image of the chain readable by {user.name}, or rebase the image")]
        import json  # here: only a qcow2 disk's chain is read as JSON, and most files have none

        try:
            info = json.loads(proc.stdout)
        except ValueError:
            return [(f"qemu-img printed nothing readable for {image}", "check the image")]
        found = []
        data_file = ((info.get("format-specific") or {}).get("data") or {}).get("data-file")
        if data_file:
            found.append(("data file", data_file))
        backing = info.get("full-backing-filename") or info.get("backing-filename")
        if backing:
            found.append(("backing file", backing))
        for what, name in found:
            if not _local(name):
                return [(f"{what} {name!r} of {image} is not a local file", "use images whose chain is local files, or rebase the image")]
            problem = file_problem(name, user, groups, os.R_OK, allow_devices)
            if problem:
                return [(f"{what} of {image}: {problem[0]}", problem[1])]
        if not backing:
            return []
        image, fmt = backing, info.get("backing-filename-format")
        if fmt not in (None, "qcow2", "raw"):
            return [(f"backing file {image} is in format {fmt!r}", "use qcow2 or raw images")]
        if fmt == "raw":
            return []
    return [(f"its backing chain is longer than {MAX_CHAIN} images", "flatten it (qemu-img convert)")]


def check(topo: Topology) -> list[Problem]:
    """Every VM's user and files against this host."""
    problems: list[Problem] = []
    for name, vm in topo.vms.items():
        path = f"vms.{name}"
        bad_user = qemuargs.user_problem(vm.user)
        if bad_user:
            problems.append(Problem(f"{path}.user", *bad_user))
            continue
        user = qemuargs.run_user(vm.user)
        groups = qemuargs.user_groups(user)
        for field in FIELDS:
            value = getattr(vm, field)
            if not value or "\0" in value or not os.path.isabs(value):
                continue  # refused already, by relative()
            want = os.R_OK | os.W_OK if field == "disk" else os.R_OK
            problem = file_problem(value, user, groups, want, vm.allow_devices)
            if problem:
                problems.append(Problem(f"{path}.{field}", *problem))
            elif field == "disk" and qemuargs.disk_format(value) == "qcow2":
                problems += [Problem(f"{path}.disk", *p) for p in chain_problems(value, user, groups, vm.allow_devices)]
    return problems
