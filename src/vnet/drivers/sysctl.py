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
_VALUE = re.compile(r"-?[0-9]{1,10}")  # what vnet writes, and so what it restores: a small integer


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


def _target(path: str, value: str) -> Path:
    if not isinstance(value, str) or not _VALUE.fullmatch(value):
        raise VnetError(f"refusing value {value!r} for sysctl {path}: vnet writes small integers only")
    return PROC / checked(path)


def _write(path: str, value: str) -> None:
    _target(path, value).write_text(value + "\n")


class MissingSwitch(FileNotFoundError):
    """A switch its namespace has no file for (its device is gone, or the kernel lacks it)."""

    def __init__(self, path: str, where: str) -> None:
        super().__init__(f"/proc/sys/{path} does not exist in {where}")
        self.path = path


def _read_all(paths: list[str]) -> list[str | None]:
    return [read(p) for p in paths]


def _write_checked(pairs: list[tuple[Path, str]]) -> None:
    """Values already checked (_target), each to its file."""
    for target, value in pairs:
        target.write_text(value + "\n")


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
        return (isinstance(entry["ns"], str) and isinstance(entry["before"], str) and _VALUE.fullmatch(entry["before"])
                and key == ns_key(entry["ns"], entry["path"]))
    except (VnetError, KeyError, TypeError):
        return False


def observe(nss: Namespaces, record: SysctlRecord, host: bool | None = None) -> list[Resource]:
    """The recorded switches as they are now: all of them, or (`host`) only the target
    namespace's, or only the endpoint namespaces' — each namespace's read in one trip into it."""
    by_ns: dict[str, list[tuple[str, dict]]] = {}
    for key, entry in record.load().items():
        if host is None or (entry["ns"] == "") == host:
            by_ns.setdefault(entry["ns"], []).append((key, entry))
    out = []
    for name, entries in by_ns.items():
        # a vanished path (its device is gone) is still reported, so that the record is cleared
        values = nss.get(name).call(_read_all, [entry["path"] for _, entry in entries])
        out += [make("sysctl", key, {"before": entry["before"]}, ns=name, path=entry["path"], value=value)
                for (key, entry), value in zip(entries, values)]
    return out


def create_many(nss: Namespaces, record: SysctlRecord, rs: list[Resource]) -> None:
    """Switches set, each namespace's read in one trip into it and written in another, with the
    values found recorded once in between (a crash after a write still knows what to restore): one
    fsync of the record for them all, not one each (~5 ms a switch). A value vnet would never
    write, or a switch that does not exist (MissingSwitch), fails them all before any is written."""
    by_ns: dict[str, list[Resource]] = {}
    targets = {r.key: _target(r.get("path"), r.get("value")) for r in rs}  # every one checked before anything is done
    for r in rs:
        by_ns.setdefault(r.get("ns"), []).append(r)
    data = record.load()
    for name, group in by_ns.items():
        ns = nss.get(name)
        for r, before in zip(group, ns.call(_read_all, [r.get("path") for r in group])):
            if before is None:
                raise MissingSwitch(r.get("path"), ns.label)
            data.setdefault(ns_key(name, r.get("path")), {"ns": name, "path": r.get("path"), "before": before})
    record.save(data)
    for name, group in by_ns.items():
        nss.get(name).call(_write_checked, [(targets[r.key], r.get("value")) for r in group])


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
