"""The Python API: the same engine the command line uses.

    from vnet import api, spec
    topo = spec.load("examples/nat.yaml")
    api.apply(topo, netns="demo-host")
    print(api.status(topo, netns="demo-host")["in_sync"])
    api.destroy(topo.name, netns="demo-host")
"""

from __future__ import annotations

from pathlib import Path

import os

from vnet import qemuargs, spec
from vnet.desired import desired
from vnet.drivers import dnsmasq
from vnet.engine import DEFAULT_STATE_DIR, Engine, Planned, statedir
from vnet.errors import SpecError, VnetError
from vnet.observe import Observation
from vnet.plan import Action, matches
from vnet.resources import Resource
from vnet.spec.models import Topology
from vnet.spec.validate import parse_yaml


def engine(topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR) -> Engine:
    return Engine(topology, netns=netns, state_dir=state_dir)


def plan(topo: Topology, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, source: Path | str | None = None) -> Planned:
    return engine(topo.name, netns, state_dir).plan(topo, _source(source))


def apply(topo: Topology, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR,
          source: Path | str | None = None, force: bool = False) -> list[Action]:
    """Apply `topo`; `source` is the file it came from (its identity in the target: another file
    under the same name is refused unless `force`)."""
    return engine(topo.name, netns, state_dir).apply(topo, _source(source), force)


def _source(path: Path | str | None) -> str | None:
    return str(Path(path).resolve()) if path is not None else None


def destroy(topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, force: bool = False) -> list[Action]:
    """Remove what vnet made for `topology`; a namespace still running processes is refused
    unless `force` (which stops them)."""
    return engine(topology, netns, state_dir).destroy(force)


def topology_name(path: Path | str) -> str:
    """The topology's name, even from a file that no longer validates (destroy must still work)."""
    try:
        return spec.load(path).name
    except SpecError:
        data = parse_yaml(Path(path).read_text())
        name = data.get("name") if isinstance(data, dict) else None
        if isinstance(name, str):
            return spec.models._name(name)
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


def status(topo: Topology, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR) -> dict:
    planned = engine(topo.name, netns, state_dir).status(topo)
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
    }


def import_host(netns: str | None = None, name: str = "imported") -> str:
    """`vnet import`: a topology file (text) describing the hand-made network on the target."""
    from vnet.adopt import import_host as _import

    return _import(netns, name).text()


def adopt(path: Path | str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR):
    """`vnet adopt`: take over what an imported file describes, without rebuilding it (marks, then
    apply; hand-made NAT rules and dnsmasq replaced by vnet's own). Returns vnet.adopt.Adopted."""
    from vnet.adopt import adopt as _adopt

    return _adopt(path, netns, state_dir)
