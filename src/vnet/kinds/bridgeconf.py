"""`allow BRIDGE` lines in qemu-bridge-helper's ACL file (/etc/qemu/bridge.conf), for QEMU run by
an ordinary user (`vnet qemu-args FILE VM --bridge-helper`).

A user's request is kept in the topology's state directory (`bridgeconf.json`: the VMs asked
for); desired state is one `allow` line per bridge of those VMs' NICs. The ACL parser takes no
inline comment (`allow br # x` allows a bridge named "br # x"), so each of vnet's lines is marked
by a comment line right before it:

    # vnet:TOPOLOGY[@NETNS] (vnet removes this and the next line on destroy)
    allow BRIDGE

Observing reads the pairs that carry this topology's mark; every other line (the administrator's,
another topology's) is left as it is. The file is rewritten whole, atomically (a temporary file
beside it, renamed over it, with the mode and owner it had), and made 0644 if it is missing.
VNET_QEMU_BRIDGE_CONF names another file (tests use it: they never write the host's)."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from vnet import qemuargs
from vnet.errors import VnetError
from vnet.facts import HostFacts
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make
from vnet.spec.models import Topology

ENV = "VNET_QEMU_BRIDGE_CONF"
REQUEST = "bridgeconf.json"  # in the topology's state directory
NOTE = "(vnet removes this and the next line on destroy)"


def conf_path() -> Path:
    return Path(os.environ.get(ENV) or qemuargs.BRIDGE_CONF)


def mark_of(topology: str, state: Path) -> str:
    """`vnet:TOPOLOGY`, with `@NETNS` when the target is a named namespace (its state directory
    lives under `@NETNS`): the same topology in two targets keeps its own lines."""
    parent = Path(state).parent.name
    return f"vnet:{topology}{parent if parent.startswith('@') else ''}"


# --- the ACL file as text ---------------------------------------------------------------------


def marked(text: str, mark: str) -> list[str]:
    """The bridges of the `allow` lines that carry `mark` (the comment line right before)."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines[:-1]):
        if _mark_in(line) == mark:
            bridge = _allowed(lines[i + 1])
            if bridge is not None and bridge not in out:
                out.append(bridge)
    return out


def render(text: str, mark: str, add: list[str] = (), remove: list[str] = ()) -> str:
    """`text` with the marked lines of `remove` taken out and those of `add` appended (a bridge
    already there is not added twice). Nothing else changes: not another mark's lines, not the
    administrator's, not their order."""
    lines = text.splitlines()
    out: list[str] = []
    have: set[str] = set()
    i = 0
    while i < len(lines):
        line = lines[i]
        bridge = _allowed(lines[i + 1]) if i + 1 < len(lines) and _mark_in(line) == mark else None
        if bridge is not None:
            if bridge in remove or bridge in have:
                i += 2
                continue
            have.add(bridge)
            out += [line, lines[i + 1]]
            i += 2
            continue
        out.append(line)
        i += 1
    for bridge in add:
        if bridge not in have and bridge not in remove:
            out += [f"# {mark} {NOTE}", f"allow {bridge}"]
            have.add(bridge)
    return "".join(f"{line}\n" for line in out)


def _mark_in(line: str) -> str | None:
    s = line.strip()
    if not s.startswith("# vnet:"):
        return None
    return s[2:].split()[0]


def _allowed(line: str) -> str | None:
    parts = line.split()
    return parts[1] if len(parts) == 2 and parts[0] == "allow" else None


# --- the file -----------------------------------------------------------------------------------


def read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise VnetError(f"cannot read {path}: {exc} (set {ENV} to use another file)") from None


@contextmanager
def _dir_locked(directory: Path) -> Iterator[None]:
    """Writers of the file (any topology, any target) one at a time: a lock on its directory,
    which leaves no file behind."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def change(path: Path, mark: str, add: list[str] = (), remove: list[str] = ()) -> None:
    """Add and remove marked lines, rewriting the file atomically (with its mode and owner)."""
    import tempfile  # here, not at the top: it brings shutil and random into every start-up (~3 ms)

    path = Path(path)
    if not path.exists() and not add:
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    with _dir_locked(path.parent):
        old = read(path)
        new = render(old, mark, add, remove)
        if new == old and path.exists():
            return
        try:
            st = path.stat()
            mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
        except FileNotFoundError:
            mode, owner = 0o644, None
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".vnet")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(new)
                f.flush()
                os.fchmod(f.fileno(), mode)
                if owner is not None and (os.geteuid() == 0 or owner[0] == os.geteuid()):
                    os.fchown(f.fileno(), *owner)
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# --- the request (in the state directory) --------------------------------------------------------


def requested(state: Path) -> list[str]:
    """The VMs a user ran `vnet qemu-args --bridge-helper` for (as root)."""
    path = Path(state) / REQUEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise VnetError(f"{path} is unreadable ({exc}): remove it and run `vnet qemu-args FILE VM --bridge-helper` again") from None
    vms = data.get("vms") if isinstance(data, dict) else None
    if not isinstance(vms, list) or not all(isinstance(v, str) for v in vms):
        raise VnetError(f"{path} is not vnet's request file: remove it and run `vnet qemu-args FILE VM --bridge-helper` again")
    return vms


def request(state: Path, vm: str) -> None:
    """Record that `vm` is run by an ordinary user through qemu-bridge-helper."""
    vms = requested(state)
    if vm in vms:
        return
    path = Path(state) / REQUEST
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"vms": [*vms, vm]}) + "\n")
    tmp.replace(path)


def bridges(topo: Topology, state: Path) -> list[str]:
    out: list[str] = []
    for vm in requested(state):
        if vm in topo.vms:  # a VM since removed from the file wants nothing
            for line in qemuargs.bridge_conf_lines(topo, vm):
                br = line.split()[1]
                if br not in out:
                    out.append(br)
    return out


class BridgeConf(Kind):
    name = "bridgeconf"
    after = ("bridge",)  # allows a bridge once it is there; goes before it

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        mark = mark_of(topo.name, facts.state)
        return [make(self.name, br, mark=mark) for br in bridges(topo, facts.state)]

    def observe(self, view, obs) -> None:
        mark = mark_of(view.topology, view.state)
        for br in marked(read(conf_path()), mark):
            obs.add(make(self.name, br, mark=mark))

    def create(self, ctx: Ctx, r: Resource) -> None:
        change(conf_path(), r.get("mark") or mark_of(ctx.topology, ctx.state), add=[r.key])

    def delete(self, ctx: Ctx, r: Resource) -> None:
        change(conf_path(), r.get("mark") or mark_of(ctx.topology, ctx.state), remove=[r.key])


KINDS = (BridgeConf(),)
