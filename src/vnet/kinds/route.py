"""Routes vnet adds (protocol-marked): an endpoint's default routes (IPv4 and IPv6) through its gateway."""

from __future__ import annotations

from vnet.drivers import netlink, rtnl
from vnet.kinds.base import Ctx, Kind
from vnet.readings import marked_routes
from vnet.resources import Resource, make, ns_key


def observed_routes(routes: list[rtnl.Route], nskey: str, owned_links: dict[int, str]) -> list[Resource]:
    """The route resources among a namespace's marked routes: those through links vnet owns."""
    out = []
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
    after = ("address", "bridge_address", "uplink")

    def create(self, ctx: Ctx, r: Resource) -> None:
        netlink.create_route(ctx.nss, r)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        netlink.delete_route(ctx.nss, r)


KINDS = (Route(),)
