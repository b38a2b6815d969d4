"""IPv4 and IPv6 addresses vnet puts on links, in the target namespace or an endpoint's (protocol-marked)."""

from __future__ import annotations

from vnet import names
from vnet.drivers import netlink, rtnl
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make, ns_key


BRIDGE_ADDRESS = "bridge_address"  # a network's own address on its bridge (kinds/links.py)
ADDRESS_KINDS = ("address", BRIDGE_ADDRESS)  # made, marked and written out the same way


def address(ns: str, ifname: str, cidr: str, kind: str = "address") -> Resource:
    ip, prefix = cidr.split("/")
    return make(kind, ns_key(ns, ifname, cidr), ns=ns, ifname=ifname, address=ip, prefixlen=int(prefix))


def observed_addresses(dump: dict[int, list[rtnl.Addr]], nskey: str, ifname: str, index: int, kind: str = "address") -> list[Resource]:
    out = []
    for a in dump.get(index, ()):
        if a.proto != names.ROUTE_PROTO:
            continue  # not vnet's: e.g. a lease a DHCP client took inside an endpoint
        out.append(address(nskey, ifname, f"{a.address}/{a.prefixlen}", kind))
    return out


class Address(Kind):
    name = "address"
    after = ("bridge", "tap", "veth", "macvlan", "ifsysctl")

    def create(self, ctx: Ctx, r: Resource) -> None:
        netlink.create_address(ctx.nss, r)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        netlink.delete_address(ctx.nss, r)


KINDS = (Address(),)
