"""Sysctls through /proc/sys inside the target namespace, with the value found before kept.

The value vnet found is recorded in the state directory before vnet writes its own, so destroy
puts back exactly what was there, and a sysctl vnet did not set is never touched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vnet.drivers.ns import Namespaces
from vnet.resources import Resource, make, ns_key

PROC = Path("/proc/sys")


def read(path: str) -> str | None:
    """The value under /proc/sys of the calling thread's namespace; None where there is none."""
    try:
        return (PROC / path).read_text().strip()
    except FileNotFoundError:
        return None


def _write(path: str, value: str) -> None:
    (PROC / path).write_text(value + "\n")


class SysctlRecord:
    """{ns-key: value before vnet} for one topology, in its state directory."""

    def __init__(self, state_dir: Path):
        self.file = state_dir / "sysctl.json"

    def load(self) -> dict[str, dict]:
        try:
            return json.loads(self.file.read_text())
        except FileNotFoundError:
            return {}

    def save(self, data: dict[str, dict]) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.file)


def observe(nss: Namespaces, record: SysctlRecord) -> list[Resource]:
    out = []
    for key, entry in record.load().items():
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
