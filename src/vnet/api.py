"""The Python API: the same engine the command line uses.

    from vnet import api, spec
    topo = spec.load("examples/nat.yaml")
    api.apply(topo, netns="demo-host")
    print(api.status(topo, netns="demo-host")["in_sync"])
    api.destroy(topo.name, netns="demo-host")
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from vnet import qemuargs, spec
from vnet.desired import desired
from vnet.drivers import dnsmasq
from vnet.engine import DEFAULT_STATE_DIR, Engine, Planned, statedir
from vnet.errors import Problem, SpecError, VnetError
from vnet.observe import Observation
from vnet.plan import Action, matches
from vnet.resources import Resource
from vnet.spec.models import Topology
from vnet.spec.validate import parse_yaml


def engine(topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, host: str | None = None) -> Engine:
    """`host`: this host's name among the topology's `hosts:`, where no address of it says so."""
    return Engine(topology, netns=netns, state_dir=state_dir, host=host)


def plan(topo: Topology, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, source: Path | str | None = None,
         host: str | None = None) -> Planned:
    """`host`: this host's name among the topology's `hosts:`, when it is not found by address."""
    return engine(topo.name, netns, state_dir, host).plan(topo, _source(source))


def apply(
    topo: Topology,
    netns: str | None = None,
    state_dir: Path | str = DEFAULT_STATE_DIR,
    source: Path | str | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    host: str | None = None,
) -> list[Action]:
    """Make the host match `topo`. `source` is the file it came from: its identity in the target
    (another file under the same name is refused unless `force`), recorded for `vnet list`; `log`
    hears each step as it is done."""
    eng = engine(topo.name, netns, state_dir, host)
    if log is not None:
        eng.log = log
    actions = eng.apply(topo, _source(source), force)
    record_source(topo, netns, state_dir, source)
    return actions


def _source(path: Path | str | None) -> str | None:
    return str(Path(path).resolve()) if path is not None else None


def destroy(topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, force: bool = False) -> list[Action]:
    """Remove what vnet made for `topology`; a namespace still running processes is refused
    unless `force` (which stops them)."""
    return engine(topology, netns, state_dir).destroy(force)


def check_name(name: str) -> str:
    """A topology name as the file's `name:` must be (it names a directory and kernel objects)."""
    try:
        return spec.models._name(name)
    except ValueError as exc:
        raise SpecError([Problem("name", f"{name!r} {exc}", "give the name as `vnet list` shows it")]) from None


def topology_name(path: Path | str) -> str:
    """The topology's name, even from a file that no longer validates (destroy must still work)."""
    try:
        return spec.load(path).name
    except SpecError as invalid:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError):
            raise invalid from None  # it says the file cannot be read
        data = parse_yaml(text)
        name = data.get("name") if isinstance(data, dict) else None
        if isinstance(name, str):
            return check_name(name)
        raise


def state_of(topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR) -> Path:
    """The directory where vnet keeps a topology's state for one target namespace."""
    return statedir.target_root(state_dir, netns) / topology


def leases(topology: str, state_dir: Path | str = DEFAULT_STATE_DIR, netns: str | None = None) -> list[dnsmasq.Lease]:
    return dnsmasq.leases(state_of(topology, netns, state_dir))


def console_log(topology: str, vm: str, state_dir: Path | str = DEFAULT_STATE_DIR, netns: str | None = None) -> Path:
    return qemuargs.files(state_of(topology, netns, state_dir), vm)["console"]


def qemu_args(topo: Topology, vm: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, full: bool = False) -> list[str]:
    if vm not in topo.vms:
        raise VnetError(f"no VM named {vm!r} in {topo.name} (known: {', '.join(topo.vms) or 'none'})")
    if not full:
        return qemuargs.nic_args(topo, vm, vhost=os.path.exists("/dev/vhost-net"))
    eng = engine(topo.name, netns, state_dir)
    for r in desired(topo, eng.facts(topo, Observation(topo.name))):
        if r.kind == "vm" and r.key == vm:
            return list(r.get("argv"))
    raise VnetError(f"no VM named {vm!r}")


def forward_counters(topology: str, netns: str | None = None) -> list[dict]:
    """Each port forward with its packet and byte counters (the `iptables -t nat -vL` of vnet)."""
    from vnet.drivers.ns import Namespace
    from vnet.drivers import nft
    from vnet import names

    ns = Namespace(netns)
    try:
        return nft.forward_counters(ns, names.nft_table(topology))
    finally:
        ns.close()


def status(topo: Topology, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, host: str | None = None) -> dict:
    planned = engine(topo.name, netns, state_dir, host).status(topo)
    owned = planned.observation.owned

    def row(r: Resource, state: str) -> dict:
        return {"kind": r.kind, "name": r.key, "details": r.describe().partition(" (")[2].rstrip(")"), "state": state}

    rows = []
    for r in planned.desired:
        have = owned.get(r.id)
        rows.append(row(have or r, "missing" if have is None else ("ok" if matches(r, have) else "drift")))
    want_ids = {r.id for r in planned.desired}
    rows += [row(r, "extra") for rid, r in owned.items() if rid not in want_ids]
    return {
        "topology": topo.name,
        "netns": netns,
        "in_sync": not planned.actions,
        "recovered": planned.recovered,  # what was said of an interrupted run this call undid, if any
        "resources": rows,
        "forwards": forward_counters(topo.name, netns),
        "leases": [lease.to_json() for lease in leases(topo.name, state_dir, netns)],
        "dhcp_clients": dhcp_clients(topo.name, netns, state_dir),  # what vnet's clients hold (`address: dhcp`)
    }


# --- what is applied: `vnet list` ----------------------------------------------------------------

SOURCE = "source.json"  # in a topology's state directory: its file and what it held, at the last apply


def record_source(topo: Topology, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, source: Path | str | None = None) -> None:
    """Remember which file a topology was applied from (None: from the API) and its size."""
    d = state_of(topo.name, netns, state_dir)
    if not (d / "claim.json").exists():  # nothing of it is applied (a rolled-back first apply)
        return
    record = {
        "file": str(Path(source).absolute()) if source is not None else None,
        "applied_at": int(time.time()),
        "networks": sorted(topo.networks),
        "endpoints": len(topo.endpoints),
        "vms": len(topo.vms),
    }
    tmp = d / f".{SOURCE}.{os.getpid()}"
    tmp.write_text(json.dumps(record, sort_keys=True))
    tmp.replace(d / SOURCE)


def applied(netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR) -> list[dict]:
    """Every topology applied in the target namespace, from the state directory alone (no host
    access): name, file, networks, endpoint and VM counts as applied, and whether a run of it
    was interrupted. `sync` adds whether the host matches the file."""
    root = state_of("x", netns, state_dir).parent  # where the target's topologies keep their state
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    out = []
    for d in dirs:
        try:
            claim = json.loads((d / "claim.json").read_text())  # see the engine's claims
        except (OSError, ValueError):
            continue
        if not isinstance(claim, dict) or claim.get("netns") != (netns or ""):
            continue
        try:
            record = json.loads((d / SOURCE).read_text())
        except (OSError, ValueError):
            record = {}
        file = claim.get("source") or record.get("file")  # an engine that records the file has it in the claim
        out.append({
            "name": d.name,
            "netns": netns,
            "file": file,
            "file_exists": bool(file) and Path(file).is_file(),
            "applied_at": record.get("applied_at"),
            "networks": record.get("networks") or sorted(claim.get("bridges") or {}),
            "endpoints": record.get("endpoints"),
            "vms": record.get("vms"),
            "interrupted": (d / "journal.jsonl").exists(),
        })
    return out


def sync(entry: dict, state_dir: Path | str = DEFAULT_STATE_DIR) -> dict:
    """Whether the host matches an applied topology's file: state is one of in_sync, pending
    (`pending` changes), interrupted (a journal waits: any command on it undoes that run),
    no_file (applied through the API), file_missing, file_invalid, file_renamed (it names
    another topology now), unknown (the host could not be read: `detail` says why). Read-only:
    an interrupted run is reported, not undone."""
    def state(s: str, pending: int | None = None, detail: str | None = None) -> dict:
        return {"state": s, "pending": pending, "detail": detail}

    if entry["interrupted"]:
        return state("interrupted", detail=f"run any vnet command on {entry['name']} to undo it")
    if not entry["file"]:
        return state("no_file", detail="applied without a file: vnet destroy --name " + entry["name"])
    if not entry["file_exists"]:
        return state("file_missing", detail=f"{entry['file']} is gone: vnet destroy --name {entry['name']} removes it")
    try:
        topo = spec.load(entry["file"])
    except SpecError as exc:
        return state("file_invalid", detail=str(exc.problems[0]) if exc.problems else None)
    if topo.name != entry["name"]:
        return state("file_renamed", detail=f"{entry['file']} names topology {topo.name} now")
    try:
        planned = engine(topo.name, entry["netns"], state_dir).status(topo)
    except (VnetError, OSError) as exc:
        return state("unknown", detail=str(exc))
    return state("pending" if planned.actions else "in_sync", pending=len(planned.actions))


# --- endpoint conveniences and boot persistence (issue 10) ------------------------------------------


def dhcp_clients(topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR) -> list[dict]:
    """What each DHCP client vnet runs (`address: dhcp`) holds: address, router, DNS, expiry."""
    from vnet.drivers import udhcpc

    return udhcpc.leases(state_of(topology, netns, state_dir))


def set_lib_dir(state_dir: Path | str = DEFAULT_STATE_DIR, lib_dir: Path | str | None = None) -> None:
    """`--lib-dir`: where the topologies under `state_dir` keep what outlives a reboot (leases);
    None for the default (/var/lib/vnet beside /run/vnet, <state_dir>/.lib beside any other)."""
    from vnet import libdir

    libdir.configure(state_dir, lib_dir)


def lib_of(topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR) -> Path:
    from vnet import libdir

    return libdir.lib_of(state_of(topology, netns, state_dir))


def enable(path: Path | str, netns: str | None = None, state_dir: Path | str | None = None, lib_dir: Path | str | None = None,
           unit_dir: Path | str | None = None, program: str | None = None) -> Path:
    """`vnet enable FILE`: a systemd unit that applies FILE at boot (and destroys it at shutdown).
    The file must validate now; the unit names it by its absolute path."""
    from vnet import persist

    file = Path(path).resolve()
    topo = spec.load(file)
    unit = persist.Unit(topo.name, file, program or persist.vnet_program(), netns,
                        Path(os.path.abspath(state_dir)) if state_dir and Path(state_dir) != DEFAULT_STATE_DIR else None,
                        Path(os.path.abspath(lib_dir)) if lib_dir else None,
                        multi_host=bool(getattr(topo, "hosts", None)))
    return persist.enable(unit, Path(unit_dir) if unit_dir else persist.DEFAULT_UNIT_DIR)


def disable(path: Path | str, unit_dir: Path | str | None = None) -> Path | None:
    """`vnet disable FILE`: remove the unit `enable` wrote for FILE (the network stays)."""
    from vnet import persist

    file = Path(path).resolve()
    return persist.disable(topology_name(file), file, Path(unit_dir) if unit_dir else persist.DEFAULT_UNIT_DIR)


def export(topo: Topology, fmt: str) -> dict[str, str] | str:
    """`vnet export --format networkd|sh`: networkd → {file name: text}; sh → one script."""
    from vnet import export as _export

    return _export.export(topo, fmt)


def import_host(netns: str | None = None, name: str = "imported") -> str:
    """`vnet import`: a topology file (text) describing the hand-made network on the target."""
    from vnet.adopt import import_host as _import

    return _import(netns, name).text()


def adopt(path: Path | str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR):
    """`vnet adopt`: take over what an imported file describes, without rebuilding it (marks, then
    apply; hand-made NAT rules and dnsmasq replaced by vnet's own). Returns vnet.adopt.Adopted."""
    from vnet.adopt import adopt as _adopt

    return _adopt(path, netns, state_dir)
