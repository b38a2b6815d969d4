"""Rate limits: a token bucket (tbf) on a port's host side shapes what the endpoint receives."""

from __future__ import annotations

from vnet.drivers import netlink
from vnet.facts import HostFacts, ports
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make
from vnet.spec.models import Topology, rate_bits


# tbf's rate travels as 32-bit bytes per second: above ~34 Gbit/s the download direction is
# unshaped (no veth or tap here moves that much: a bare veth pair does ~19 Gbit/s); the upload
# limit (nftables) takes the full rate
TBF_MAX_BITS = (2**32 - 1) * 8


class Qdisc(Kind):
    name = "qdisc"
    reads_namespaces = True  # of the ports found: the veths among them too
    after = ("tap", "veth")

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        return [make("qdisc", p.ifname, rate=min(rate_bits(p.rate), TBF_MAX_BITS)) for p in ports(topo) if p.rate]

    def observe(self, view, obs) -> None:
        dump = netlink.qdisc_dump(view.nss.host)
        for r in list(obs.owned.values()):
            if r.kind in ("tap", "veth"):
                li = obs.links.get(r.key)
                q = netlink.qdisc_resource(dump, li.name, li.index) if li else None
                if q is not None:
                    obs.add(q)

    def create(self, ctx: Ctx, r: Resource) -> None:
        netlink.create_qdisc(ctx.nss, r)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        netlink.delete_qdisc(ctx.nss, r)


KINDS = (Qdisc(),)
