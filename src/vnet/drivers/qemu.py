"""QEMU guests as supervised daemons: -daemonize with a pid file, console log, QMP socket."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vnet import qemuargs
from vnet.drivers import process
from vnet.drivers.ns import Namespaces
from vnet.resources import Resource, make


def digest(argv: list[str] | tuple[str, ...]) -> str:
    return hashlib.sha256("\0".join(argv).encode()).hexdigest()[:16]


def create(nss: Namespaces, state: Path, r: Resource) -> None:
    f = qemuargs.files(state, r.key)
    argv = list(r.get("argv"))
    f["argv"].parent.mkdir(parents=True, exist_ok=True)
    f["argv"].write_text(json.dumps(argv))
    f["console"].unlink(missing_ok=True)  # a fresh log per boot
    try:
        process.start(nss.host, argv, f["pid"], timeout=30)
    except BaseException:
        f["argv"].unlink(missing_ok=True)
        raise


def delete(nss: Namespaces, state: Path, r: Resource) -> None:
    f = qemuargs.files(state, r.key)
    process.stop(f["pid"], timeout=10.0)
    for k in ("argv", "agent", "qmp"):
        f[k].unlink(missing_ok=True)


def update(nss: Namespaces, state: Path, old: Resource, new: Resource) -> None:
    delete(nss, state, old)
    create(nss, state, new)


def observe(state: Path) -> list[Resource]:
    out = []
    for argv_file in sorted(state.glob("vm-*.argv")):
        name = argv_file.name[len("vm-") : -len(".argv")]
        if process.running(qemuargs.files(state, name)["pid"]) is None:
            continue  # not running: apply starts it again
        argv = json.loads(argv_file.read_text())
        out.append(make("vm", name, {"argv": argv}, digest=digest(argv)))
    return out
