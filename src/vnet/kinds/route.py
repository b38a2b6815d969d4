"""Routes vnet adds (protocol-marked): an endpoint's default routes (IPv4 and IPv6) through its gateway."""

from __future__ import annotations

from vnet import names
from vnet.drivers import netlink, rtnl
from vnet.drivers.ns import Namespace
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make, ns_key


def observed_routes(ns: Namespace, nskey: str, owned_links: dict[int, str]) -> list[Resource]:
    out = []
    try:  # IPv4 and IPv6 in one dump
        routes = ns.nl.routes(table=rtnl.RT_TABLE_MAIN, proto=names.ROUTE_PROTO, family=rtnl.AF_UNSPEC)
    except rtnl.RtnlError:  # a kernel that refuses the filter for some family: one dump each
        routes = ns.nl.routes(table=rtnl.RT_TABLE_MAIN, proto=names.ROUTE_PROTO) + ns.nl.routes(
            table=rtnl.RT_TABLE_MAIN, proto=names.ROUTE_PROTO, family=rtnl.AF_INET6
        )
    for rt in routes:
        if rt.oif not in owned_links:
            continue
        if rt.family == rtnl.AF_INET6:
            dst = f"{rt.dst or '::'}/{rt.dst_len}"  # IPv4's default is "default", IPv6's "::/0"
        else:
            dst = f"{rt.dst}/{rt.dst_len}" if rt.dst else "default"
        out.append(make("route", ns_key(nskey, dst), ns=nskey, dst=dst, gateway=rt.gateway, ifname=owned_links[rt.oif]))
    return out


class Route(Kind):
    name = "route"
    after = ("address", "uplink")

    def create(self, ctx: Ctx, r: Resource) -> None:
        netlink.create_route(ctx.nss, r)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        netlink.delete_route(ctx.nss, r)


KINDS = (Route(),)
