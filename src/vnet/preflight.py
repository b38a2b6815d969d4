"""Checks of a topology against the host it is about to change. Read-only; runs before any change.

Each problem names the topology path and the fix: a name taken by something vnet did not make,
an uplink that does not exist, a subnet that collides with a route the host already has.
"""

from __future__ import annotations

import ipaddress

from vnet import names
from vnet.facts import HostFacts, bridge_name, uplink_of
from vnet.drivers import ns as nsmod
from vnet.errors import Problem
from vnet.observe import Observation
from vnet.resources import Resource
from vnet.spec.models import NetnsSpec, Topology
from vnet.values import per_topology


def _owner_text(mark) -> str:
    return f"topology {mark[0]!r}" if mark else "something vnet did not make"


def _clash_fix(mark, what: str) -> str:
    """Another topology's object goes away with that topology; a foreign one is the user's."""
    if mark:
        return f"destroy topology {mark[0]} first (`vnet destroy` with its file), or choose another {what}"
    return f"choose another {what}, or remove that {'interface' if what == 'name' else what}"


@per_topology
def _paths(topo: Topology, _: None = None) -> dict[str, str]:
    """The topology path behind each interface name vnet makes, for the problem that names it.
    Worked out only where a name is taken: two names per endpoint, a thousand times over in a
    no-op apply that finds no clash, were most of its checks."""
    t = topo.name
    out = {}
    for net_name in topo.networks:
        out[bridge_name(topo, net_name)] = f"networks.{net_name}.bridge"
    for ep_name, ep in topo.endpoints.items():
        for name in (names.tap(t, ep_name), names.veth_host(t, ep_name), getattr(ep, "host_ifname", None), getattr(ep, "ifname", None)):
            if name:
                out.setdefault(name, f"endpoints.{ep_name}")
    return out


def check(topo: Topology, obs: Observation, want: list[Resource], facts: HostFacts) -> list[Problem]:
    problems: list[Problem] = []
    add = problems.append
    t = topo.name
    clashed: set[str] = set()  # links reported taken: a route through one is the same clash
    for r in want:
        if r.kind in ("bridge", "tap", "veth"):
            li = obs.links.get(r.key)
            if li is not None and (not li.mark or li.mark[0] != t):
                clashed.add(r.key)
                add(Problem(_paths(topo, None).get(r.key, r.key), f"interface {r.key} exists already and belongs to {_owner_text(li.mark)}", _clash_fix(li.mark, "name")))
        if r.kind == "netns" and r.id not in obs.owned and nsmod.half_made(r.key):
            # someone's `ip netns add` (or a run of another vnet) killed half-way: not ours to remove
            add(Problem(f"endpoints.{r.get('mark').split(':')[3]}", f"{nsmod.NETNS_DIR / r.key} is a file with no namespace mounted on it",
                        f"if nothing is creating it right now, remove it with `ip netns delete {r.key}`"))
        if r.kind == "netns" and r.key in obs.namespaces and obs.namespaces[r.key] != t:
            owner = obs.namespaces[r.key]
            fix = f"destroy topology {owner} first (`vnet destroy` with its file), or rename this endpoint" if owner else "set netns: to borrow it, or remove it"
            add(Problem(f"endpoints.{r.get('mark').split(':')[3]}", f"network namespace {r.key} exists and belongs to {_owner_text((owner,) if owner else None)}", fix))

    for ep_name, ep in topo.endpoints.items():
        if isinstance(ep, NetnsSpec) and ep.netns and not ep.own_netns and not nsmod.exists(ep.netns):
            add(Problem(f"endpoints.{ep_name}.netns", f"network namespace {ep.netns} does not exist", "create it first (ip netns add), or omit netns: to let vnet make one"))

    owned_bridges = {r.key for r in want if r.kind == "bridge"}
    for net_name, net in topo.networks.items():
        path = f"networks.{net_name}"
        if net.mode == "nat":
            up = uplink_of(topo, net_name, facts)
            if up is None:
                add(Problem(f"{path}.uplink", "the host has no default route to take the uplink from", "name the egress interface, e.g. uplink: eth0"))
            elif up not in obs.links and up not in owned_bridges:  # a bridged network's bridge is made by this apply
                add(Problem(f"{path}.uplink", f"no interface {up} on the host", "name an existing interface"))
        if net.mode == "bridged" and net.uplink:
            li = obs.links.get(net.uplink)
            if li is None:
                add(Problem(f"{path}.uplink", f"no interface {net.uplink} on the host", "name an existing NIC"))
            elif li.mark:
                add(Problem(f"{path}.uplink", f"{net.uplink} is a vnet interface", "name a physical NIC"))
            elif li.master and li.master != bridge_name(topo, net_name):
                add(Problem(f"{path}.uplink", f"{net.uplink} is already a port of {li.master}", "release it first"))
            elif li.kind == "bridge":
                add(Problem(f"{path}.uplink", f"{net.uplink} is a bridge", "name the NIC, not a bridge"))
        if net.subnet:
            subnet = ipaddress.IPv4Network(net.subnet)
            for dst, dev in obs.routes:
                if dev in owned_bridges or dev in clashed:
                    continue
                if dst.overlaps(subnet):
                    li = obs.links.get(dev) if dev else None
                    if li is not None and li.mark and li.mark[0] != t:  # another topology's network
                        add(Problem(f"{path}.subnet", f"{subnet} overlaps {dst}, claimed by topology {li.mark[0]!r} (bridge {dev})", f"choose a free range, or destroy topology {li.mark[0]} first"))
                    else:
                        add(Problem(f"{path}.subnet", f"{subnet} collides with the host's route to {dst} via {dev}", "choose a free range"))
                    break

    table = names.nft_table(t)
    for tb in obs.tables:
        if tb.get("name") == table and tb.get("family") == "inet":
            if f"ruleset:{table}" not in obs.owned:  # observe took it only if its comment is ours
                add(Problem("name", f"nftables table inet {table} exists and is not this topology's", "rename the topology, or remove that table"))
    return problems
