"""DHCP clients vnet runs and supervises inside endpoint namespaces (`address: dhcp`): one busybox
udhcpc per endpoint, started after vnet's own dnsmasq (the service kind) so the first request
finds a server; restarted by the next apply when it died (drivers/udhcpc.py)."""

from __future__ import annotations

from vnet import names
from vnet.drivers import udhcpc
from vnet.facts import HostFacts
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource
from vnet.spec.models import MacvlanSpec, NetnsSpec, Topology


class DhcpClient(Kind):
    name = "dhcpclient"
    after = ("service", "veth", "macvlan", "route")

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        out = []
        for ep_name, ep in topo.endpoints.items():
            if isinstance(ep, (NetnsSpec, MacvlanSpec)) and ep.dhcp:
                ns = names.endpoint_netns(topo.name, ep_name, ep.netns)
                out.append(udhcpc.resource(ns, ep.ifname, ep_name, ep_name))
        return out

    def observe(self, view, obs) -> None:
        for r in udhcpc.observe(view.state):
            obs.add(r)

    def create(self, ctx: Ctx, r: Resource) -> None:
        udhcpc.create(ctx.nss, ctx.state, r)  # the script is rendered anew from checked names, never taken from a record

    def delete(self, ctx: Ctx, r: Resource) -> None:
        udhcpc.delete(ctx.nss, ctx.state, r)

    def sweep(self, ctx: Ctx, r: Resource, obs) -> None:
        udhcpc.sweep(ctx.state, r)


KINDS = (DhcpClient(),)
