"""Rate limits: a token bucket (tbf) on a port's host side shapes what the endpoint receives."""

from __future__ import annotations

from vnet import kinds
from vnet.drivers import netlink
from vnet.facts import HostFacts, ports
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make
from vnet.spec.models import Topology, rate_bits


# tbf's rate travels as 32-bit bytes per second: above ~34 Gbit/s the download direction is
# unshaped (no veth or tap here moves that much: a bare veth pair does ~19 Gbit/s); the upload
# limit (nftables) takes the full rate
TBF_MAX_BITS = (2**32 - 1) * 8


PORTS = ("tap", "veth")  # the kinds whose links are bridge ports: where a rate limit sits


def _is_port(role: str) -> bool:
    kind = kinds.by_role(role)
    return kind is not None and kind.name in PORTS


class Qdisc(Kind):
    name = "qdisc"
    after = PORTS

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        return [make("qdisc", p.ifname, rate=min(rate_bits(p.rate), TBF_MAX_BITS)) for p in ports(topo) if p.rate]

    def observe(self, view, obs) -> None:
        # the ports by their marks, not by the tap and veth resources found: a veth's is made once
        # its namespace is read, after this runs (observe.Observing)
        dump = netlink.qdisc_dump(view.nss.host)
        for li in obs.links.values():
            if li.mark and li.mark[0] == view.topology and _is_port(li.mark[1]):
                q = netlink.qdisc_resource(dump, li.name, li.index)
                if q is not None:
                    obs.add(q)

    def create(self, ctx: Ctx, r: Resource) -> None:
        netlink.create_qdisc(ctx.nss, r)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        netlink.delete_qdisc(ctx.nss, r)


KINDS = (Qdisc(),)
