"""What observing reads of one namespace, as values: its links with vnet's marks parsed, its
addresses, and the routes that carry vnet's protocol number. Apart from observe.py, on nothing but
the netlink client and names, so that `vnet apply` can have them read before it imports the rest of
vnet (headstart.py); a forked child reads them (drivers/readahead.py)."""

from __future__ import annotations

import operator

from vnet import names
from vnet.drivers import rtnl
from vnet.values import Record


class LinkInfo(Record):
    """A link of the target namespace, with vnet's mark where it carries one."""

    __slots__ = ("name", "index", "kind", "mark", "master", "mac", "mtu", "up", "data")
    name: str
    index: int
    kind: str | None
    mark: tuple[str, str, str, tuple[str, ...]] | None
    master: str | None
    mac: str | None
    mtu: int
    up: bool
    data: dict  # IFLA_INFO_DATA (tun owner/group/type …)

    def __init__(self, name: str, index: int, kind: str | None, mark: tuple[str, str, str, tuple[str, ...]] | None,
                 master: str | None, mac: str | None, mtu: int, up: bool, data: dict | None = None) -> None:
        self.name = name
        self.index = index
        self.kind = kind
        self.mark = mark
        self.master = master
        self.mac = mac
        self.mtu = mtu
        self.up = up
        self.data = {} if data is None else data


def link_infos(links: list[rtnl.Link]) -> dict[str, LinkInfo]:
    by_index = {li.index: li.ifname for li in links}
    parse_mark, master_of = names.parse_mark, by_index.get
    # positional: a no-op apply at a thousand endpoints makes two thousand of these
    return {
        li.ifname: LinkInfo(li.ifname, li.index, li.kind, parse_mark(li.alias), master_of(li.master) if li.master else None,
                            li.mac, li.mtu, li.up, li.data)
        for li in links
    }


def marked_routes(nl: rtnl.Rtnl) -> list[rtnl.Route]:
    """The routes of a namespace that carry vnet's protocol number (main table, both families)."""
    try:  # IPv4 and IPv6 in one dump
        return nl.routes(table=rtnl.RT_TABLE_MAIN, proto=names.ROUTE_PROTO, family=rtnl.AF_UNSPEC)
    except rtnl.RtnlError:  # a kernel that refuses the filter for some family: one dump each
        return nl.routes(table=rtnl.RT_TABLE_MAIN, proto=names.ROUTE_PROTO) + nl.routes(
            table=rtnl.RT_TABLE_MAIN, proto=names.ROUTE_PROTO, family=rtnl.AF_INET6
        )


_INFO_FIELDS = operator.attrgetter(*LinkInfo._fields)
_ADDR_FIELDS = operator.attrgetter(*rtnl.Addr._fields)
_ROUTE_FIELDS = operator.attrgetter(*rtnl.Route._fields)


def read_namespace(nl: rtnl.Rtnl) -> tuple[list, list, list]:
    """What observing asks of an endpoint's namespace, as plain values (read in a child, marks
    parsed there too): links as LinkInfo fields, addresses as rtnl.Addr's, vnet's routes as
    rtnl.Route's."""
    links = [_INFO_FIELDS(li) for li in link_infos(nl.links()).values()]
    return links, [_ADDR_FIELDS(a) for a in nl.addrs()], [_ROUTE_FIELDS(r) for r in marked_routes(nl)]


def read_target(nl: rtnl.Rtnl) -> tuple[list, list, list, list]:
    """What observing asks of the target namespace: as `read_namespace`, and every route of the
    main table's IPv4 (the default route names the uplink; the rest are what a subnet clashes with)."""
    return (*read_namespace(nl), [_ROUTE_FIELDS(r) for r in nl.routes(table=rtnl.RT_TABLE_MAIN)])
