"""ACCEPT rules in iptables' FORWARD path, only where another firewall (Docker's FORWARD DROP)
would drop what vnet forwards; vnet's own table still filters all of it. Marked by comment."""

from __future__ import annotations

from vnet.drivers import iptables
from vnet.facts import HostFacts, forward_paths
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource
from vnet.spec.models import Topology


class Iptables(Kind):
    name = iptables.KIND
    after = ("ruleset",)  # open the path only once vnet's own ruleset guards it
    observe_early = True

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        if facts.iptables is None:
            return []
        return iptables.desired(topo.name, facts.iptables, forward_paths(topo, facts))

    def observe(self, view, obs) -> None:
        # the ruleset kind, observed before this one (`after`), has read the namespace's nftables tables
        obs.filter = iptables.read(view.nss.host, obs.tables)
        for r in iptables.observe(view.topology, obs.filter):
            obs.add(r)

    def create(self, ctx: Ctx, r: Resource) -> None:
        with ctx.host_lock():  # the chain is shared with other topologies and other tools
            iptables.create(ctx.nss.host, r)

    def update(self, ctx: Ctx, old: Resource, new: Resource) -> None:
        with ctx.host_lock():
            iptables.update(ctx.nss.host, old, new)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        with ctx.host_lock():
            iptables.delete(ctx.nss.host, r)


KINDS = (Iptables(),)
