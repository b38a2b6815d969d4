"""Sysctls through /proc/sys inside the target namespace, with the value found before kept.

The value vnet found is recorded in the state directory before vnet writes its own, so destroy
puts back exactly what was there, and a sysctl vnet did not set is never touched.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from vnet.drivers.ns import Namespaces
from vnet.errors import VnetError
from vnet.resources import Resource, make, ns_key

PROC = Path("/proc/sys")
# the sysctls vnet sets: per-interface switches under net/; a path read back from a record or a
# journal must be one of them (a state directory is data, never a way to write /proc/sys/kernel)
_PATH = re.compile(r"net/ipv[46]/conf/[A-Za-z0-9_.-]{1,15}/[a-z_]{1,32}")


def checked(path: str) -> str:
    if not isinstance(path, str) or not _PATH.fullmatch(path) or "/../" in f"/{path}/" or "/./" in f"/{path}/":
        raise VnetError(f"refusing sysctl {path!r}: vnet only sets net/ipv4|ipv6/conf/<interface>/<switch>")
    return path


def _under_net(path: str) -> str:
    if not isinstance(path, str) or not re.fullmatch(r"net/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", path) or ".." in path.split("/"):
        raise VnetError(f"refusing sysctl {path!r}: not a name under /proc/sys/net")
    return path


def read(path: str) -> str | None:
    """The value under /proc/sys of the calling thread's namespace; None where there is none."""
    try:
        return (PROC / _under_net(path)).read_text().strip()
    except FileNotFoundError:
        return None


def _write(path: str, value: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"-?[0-9]{1,10}", value):
        raise VnetError(f"refusing value {value!r} for sysctl {path}: vnet writes small integers only")
    (PROC / checked(path)).write_text(value + "\n")


class SysctlRecord:
    """{ns-key: value before vnet} for one topology, in its state directory."""

    def __init__(self, state_dir: Path):
        self.file = state_dir / "sysctl.json"

    def load(self) -> dict[str, dict]:
        """The record; entries vnet would never have written (another path, a malformed value)
        are left out: they are not vnet's to restore."""
        try:
            data = json.loads(self.file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}
        return {k: e for k, e in (data.items() if isinstance(data, dict) else ()) if _sane(k, e)}

    def save(self, data: dict[str, dict]) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.file)


def _sane(key: str, entry) -> bool:
    try:
        checked(entry["path"])
        return (isinstance(entry["ns"], str) and isinstance(entry["before"], str) and re.fullmatch(r"-?[0-9]{1,10}", entry["before"])
                and key == ns_key(entry["ns"], entry["path"]))
    except (VnetError, KeyError, TypeError):
        return False


def observe(nss: Namespaces, record: SysctlRecord, host: bool | None = None) -> list[Resource]:
    """The recorded switches as they are now: all of them, or (`host`) only the target
    namespace's, or only the endpoint namespaces' — each value is read in its namespace once."""
    out = []
    for key, entry in record.load().items():
        if host is not None and (entry["ns"] == "") != host:
            continue
        # a vanished path (its device is gone) is still reported, so that the record is cleared
        value = nss.get(entry["ns"]).call(read, entry["path"])
        out.append(make("sysctl", key, {"before": entry["before"]}, ns=entry["ns"], path=entry["path"], value=value))
    return out


def create(nss: Namespaces, record: SysctlRecord, r: Resource) -> None:
    ns, path = nss.get(r.get("ns")), r.get("path")
    before = ns.call(read, path)
    if before is None:
        raise FileNotFoundError(f"/proc/sys/{path} does not exist in {ns.label}")
    data = record.load()
    data.setdefault(ns_key(r.get("ns"), path), {"ns": r.get("ns"), "path": path, "before": before})
    record.save(data)  # before writing: a crash after the write still knows what to restore
    ns.call(_write, path, r.get("value"))


def update(nss: Namespaces, record: SysctlRecord, old: Resource, new: Resource) -> None:
    nss.get(new.get("ns")).call(_write, new.get("path"), new.get("value"))


def delete(nss: Namespaces, record: SysctlRecord, r: Resource) -> None:
    data = record.load()
    entry = data.pop(r.key, None)
    if entry is not None:
        ns = nss.get(entry["ns"])
        if ns.call(read, entry["path"]) is not None:
            ns.call(_write, entry["path"], entry["before"])
    record.save(data)
