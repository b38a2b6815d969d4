"""Network namespaces vnet makes for endpoints (and for the DHCP/DNS service of an isolated
network). Ownership is the mark on the namespace's own `lo`, so it survives the loss of vnet's
state; observing them is part of the link pass (observe.py)."""

from __future__ import annotations

from vnet.drivers import netlink
from vnet.drivers import ns as nsmod
from vnet.facts import HostFacts, endpoint_netns
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make
from vnet import names
from vnet.spec.models import NetnsSpec, Topology


class Netns(Kind):
    name = "netns"

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        return [
            # a topology over several hosts: the host's name too (kinds/vxlan.py tells them apart)
            make("netns", endpoint_netns(topo, ep_name), mark=names.link_mark(topo.name, "netns", ep_name, *filter(None, (facts.host,))))
            for ep_name, ep in topo.endpoints.items()
            if isinstance(ep, NetnsSpec) and ep.netns is None  # a borrowed namespace is not vnet's
        ]

    def namespaces(self, r: Resource) -> tuple[str, ...]:
        return (r.key,)

    def create(self, ctx: Ctx, r: Resource) -> None:
        netlink.create_netns(ctx.nss, r)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        netlink.delete_netns(ctx.nss, r)

    def sweep(self, ctx: Ctx, r: Resource, obs) -> None:
        if nsmod.exists(r.key) and r.id not in obs.owned:
            from vnet.observe import read_links

            lo = read_links(ctx.nss.get(r.key)).get("lo")
            if lo is None or lo.mark is None:
                netlink.delete_netns(ctx.nss, r)


KINDS = (Netns(),)
