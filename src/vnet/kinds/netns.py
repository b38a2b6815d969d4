"""Network namespaces vnet makes for endpoints (and for the DHCP/DNS service of an isolated
network). Ownership is the mark on the namespace's own `lo`, so it survives the loss of vnet's
state; observing them is part of the link pass (observe.py).

A namespace vnet owns under a name of the topology's choosing (`netns:` with `own_netns: true`,
as `vnet adopt` takes one a guide made) does not start with the topology's name, so the pass
that finds vnet's namespaces by name would miss it without the topology file (destroy): its name
is kept in the topology's state directory (`netns.json`), and it counts as vnet's only while its
`lo` carries the mark.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vnet.drivers import netlink
from vnet.drivers import ns as nsmod
from vnet.facts import HostFacts, endpoint_netns
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make
from vnet import names
from vnet.spec.models import NetnsSpec, Topology

RECORD = "netns.json"


def _record(state: Path) -> Path:
    return state / RECORD


def recorded(state: Path) -> list[str]:
    """Names of the namespaces the topology owns under names of its own choosing."""
    try:
        data = json.loads(_record(state).read_text())
    except (OSError, ValueError):
        return []
    return sorted(n for n in data if isinstance(n, str) and n and "/" not in n and n not in (".", "..")) if isinstance(data, list) else []


def record(state: Path, name: str, keep: bool = True) -> None:
    """Add (keep) or remove a name in the record, written whole (temp file, rename)."""
    have = set(recorded(state))
    new = (have | {name}) if keep else (have - {name})
    if new == have:
        return
    state.mkdir(parents=True, exist_ok=True)
    tmp = _record(state).with_suffix(".tmp")
    tmp.write_text(json.dumps(sorted(new)))
    os.replace(tmp, _record(state))


def _custom(topology: str, name: str) -> bool:
    return not name.startswith(f"{topology}-")


def owned(topo: Topology) -> list[tuple[str, str]]:
    """(endpoint, namespace) of each namespace the topology makes and owns."""
    return [
        (ep_name, endpoint_netns(topo, ep_name))
        for ep_name, ep in topo.endpoints.items()
        # a borrowed namespace is not vnet's, unless the topology says it is (own_netns)
        if isinstance(ep, NetnsSpec) and (ep.netns is None or ep.own_netns)
    ]


class Netns(Kind):
    name = "netns"
    reads_namespaces = True  # lo's mark, in namespaces the pass by name did not read
    create_batch = "namespaces"  # all made in one trip of the thread that enters namespaces

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        return [make("netns", name, mark=names.netns_mark(topo.name, ep_name, facts.target)) for ep_name, name in owned(topo)]

    def observe(self, view, obs) -> None:
        # the owned namespaces with names of their own, which the pass by name did not read
        target = view.nss.target
        want_target = (names.target_id(target),) if target else ()
        for name in recorded(view.state):
            if name in obs.namespaces or not view.exists(name):
                continue
            lo = view.links(name).get("lo")
            mark = lo.mark if lo else None
            if mark and mark[0] == view.topology and mark[1] == "netns" and mark[3][:1] == want_target:
                obs.namespaces[name] = view.topology
                obs.add(make("netns", name, mark=view.alias(lo)))

    def namespaces(self, r: Resource) -> tuple[str, ...]:
        return (r.key,)

    def create(self, ctx: Ctx, r: Resource) -> None:
        self.create_many(ctx, [r])

    def create_many(self, ctx: Ctx, rs: list[Resource]) -> None:
        for r in rs:
            if _custom(ctx.topology, r.key):
                record(ctx.state, r.key)  # before it exists: a crash after still finds it
        netlink.create_netnses(ctx.nss, rs)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        netlink.delete_netns(ctx.nss, r)
        if _custom(ctx.topology, r.key):
            record(ctx.state, r.key, keep=False)

    def sweep(self, ctx: Ctx, r: Resource, obs) -> None:
        if nsmod.half_made(r.key):
            # killed between making the file and mounting the namespace on it: the file is all
            # there is, and left alone it would make every later setns() on the name fail
            nsmod.remove(r.key)
            return
        if nsmod.exists(r.key) and r.id not in obs.owned:
            from vnet.observe import read_links

            lo = read_links(ctx.nss.get(r.key)).get("lo")
            if lo is None or lo.mark is None:
                netlink.delete_netns(ctx.nss, r)


KINDS = (Netns(),)
