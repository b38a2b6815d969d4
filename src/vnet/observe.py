"""Read the host and return what a topology owns there, as resources, plus the facts the
preflight checks need (every link and its owner, host routes, nft tables).

Ownership is read off the objects: a link's ifalias mark, a namespace's `lo` mark, a route's
protocol number, vnet's table comment; sysctls from the record vnet keeps of what it changed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from vnet import names
from vnet.drivers import dnsmasq, iptables, netlink, nft, qemu, rtnl, sysctl
from vnet.drivers import ns as nsmod
from vnet.drivers.ns import Namespace, Namespaces
from vnet.resources import Resource, make, ns_key

TUN_TYPES = {1: "tun", 2: "tap"}
UNSET_ID = 0xFFFFFFFF


@dataclass
class LinkInfo:
    name: str
    index: int
    kind: str | None
    mark: tuple[str, str, str, tuple[str, ...]] | None
    master: str | None
    mac: str | None
    mtu: int
    up: bool
    data: dict = field(default_factory=dict)  # IFLA_INFO_DATA (tun owner/group/type …)


@dataclass
class Observation:
    topology: str
    owned: dict[str, Resource] = field(default_factory=dict)
    links: dict[str, LinkInfo] = field(default_factory=dict)  # every link of the target namespace
    routes: list[tuple[ipaddress.IPv4Network, str | None]] = field(default_factory=list)  # (dst, dev)
    default_uplink: str | None = None
    tables: list[dict] = field(default_factory=list)
    namespaces: dict[str, str | None] = field(default_factory=dict)  # name → owning topology (None: foreign)
    filter: iptables.Filter = field(default_factory=iptables.Filter)  # iptables' filter table (engine reads it)

    def add(self, r: Resource) -> None:
        self.owned[r.id] = r


def read_links(ns: Namespace) -> dict[str, LinkInfo]:
    links = ns.nl.links()
    by_index = {li.index: li.ifname for li in links}
    ns.indexes = {name: idx for idx, name in by_index.items()}
    return {
        li.ifname: LinkInfo(
            name=li.ifname,
            index=li.index,
            kind=li.kind,
            mark=names.parse_mark(li.alias),
            master=by_index.get(li.master) if li.master else None,
            mac=li.mac,
            mtu=li.mtu,
            up=li.up,
            data=li.data,
        )
        for li in links
    }


def _tun_attrs(data: dict) -> dict:
    def ident(key: str) -> int | None:
        value = data.get(key)
        return None if value in (None, UNSET_ID) else value
    return {
        "mode": TUN_TYPES.get(data.get("IFLA_TUN_TYPE"), "?"),
        "owner": ident("IFLA_TUN_OWNER"),
        "group": ident("IFLA_TUN_GROUP"),
        "multi_queue": bool(data.get("IFLA_TUN_MULTI_QUEUE")),
    }


def _address_dump(ns: Namespace) -> dict[int, list[rtnl.Addr]]:
    """Every IPv4 address of the namespace by ifindex: one dump, not one per link."""
    out: dict[int, list[rtnl.Addr]] = {}
    for a in ns.nl.addrs():
        out.setdefault(a.index, []).append(a)
    return out


def _addresses(dump: dict[int, list[rtnl.Addr]], nskey: str, ifname: str, index: int) -> list[Resource]:
    out = []
    for a in dump.get(index, ()):
        if a.proto != names.ROUTE_PROTO:
            continue  # not vnet's: e.g. a lease a DHCP client took inside an endpoint
        cidr = f"{a.address}/{a.prefixlen}"
        out.append(make("address", ns_key(nskey, ifname, cidr), ns=nskey, ifname=ifname, address=a.address, prefixlen=a.prefixlen))
    return out


def _routes(ns: Namespace, nskey: str, owned_links: dict[int, str]) -> list[Resource]:
    out = []
    for rt in ns.nl.routes(table=rtnl.RT_TABLE_MAIN, proto=names.ROUTE_PROTO):
        if rt.oif not in owned_links:
            continue
        dst = f"{rt.dst}/{rt.dst_len}" if rt.dst else "default"
        out.append(make("route", ns_key(nskey, dst), ns=nskey, dst=dst, gateway=rt.gateway, ifname=owned_links[rt.oif]))
    return out


def _add(obs: Observation, r: Resource | None) -> None:
    if r is not None:
        obs.add(r)




def observe(nss: Namespaces, topology: str, state_dir: Path, extra_netns: tuple[str, ...] = ()) -> Observation:
    obs = Observation(topology)
    host = nss.host
    obs.links = read_links(host)
    seen: dict[str, dict[str, LinkInfo]] = {}

    def links_of(name: str) -> dict[str, LinkInfo]:
        # an endpoint namespace is read once: for its veth's peer and for the mark on its lo
        if name not in seen:
            seen[name] = read_links(nss.get(name))
        return seen[name]

    host_addrs = _address_dump(host)
    qdiscs = netlink.qdisc_dump(host)
    by_index = {li.index: li for li in obs.links.values()}
    owned_index: dict[int, str] = {}
    for li in obs.links.values():
        if not li.mark or li.mark[0] != topology:
            continue
        _, role, _, extra = li.mark
        alias = ":".join((names.MARK, topology, li.mark[1], li.mark[2], *extra))
        owned_index[li.index] = li.name
        if role == "bridge":
            bridged = extra[:1] == ("bridged",)
            obs.add(make("bridge", li.name, mark=alias, mtu=li.mtu, mac=li.mac))
            if bridged:
                for port in obs.links.values():
                    if port.master == li.name and not port.mark:
                        obs.add(make("uplink", port.name, bridge=li.name))
                continue  # its addresses are the uplink's, carried by the uplink resource
            for a in _addresses(host_addrs, "", li.name, li.index):
                obs.add(a)
        elif role in ("tap", "tun"):
            obs.add(make("tap", li.name, mark=alias, master=li.master, mac=li.mac, mtu=li.mtu, **_tun_attrs(li.data)))
            _add(obs, netlink.qdisc_resource(qdiscs, li.name, li.index))
            for a in _addresses(host_addrs, "", li.name, li.index):
                obs.add(a)
        elif role == "veth":
            _add(obs, netlink.qdisc_resource(qdiscs, li.name, li.index))
            peer_ns = extra[0] if extra else None
            attrs = dict(mark=alias, master=li.master, mac=li.mac, mtu=li.mtu, peer_ns=peer_ns, peer_name=None, peer_mac=None, peer_mark=None)
            if peer_ns and nsmod.exists(peer_ns):
                inner = nss.get(peer_ns)
                inner_links = links_of(peer_ns)
                inner_owned: dict[int, str] = {}
                for p in inner_links.values():
                    if p.mark and p.mark[:3] == (topology, "veth-peer", li.mark[2]):
                        attrs.update(peer_name=p.name, peer_mac=p.mac, peer_mark=":".join((names.MARK, *p.mark[:3], *p.mark[3])))
                        inner_owned[p.index] = p.name
                        for a in _addresses(_address_dump(inner), peer_ns, p.name, p.index):
                            obs.add(a)
                for rt in _routes(inner, peer_ns, inner_owned):
                    obs.add(rt)
            obs.add(make("veth", li.name, **attrs))
    for rt in _routes(host, "", owned_index):
        obs.add(rt)

    # namespaces: vnet's default names start with the topology's; ownership is the mark on lo
    listed = nsmod.listed()
    for name in sorted({n for n in listed if n.startswith(f"{topology}-")} | (set(extra_netns) & set(listed))):
        lo = links_of(name).get("lo")
        mark = lo.mark if lo else None
        owner = mark[0] if mark else None
        obs.namespaces[name] = owner
        if owner == topology:
            obs.add(make("netns", name, mark=":".join((names.MARK, *mark[:3], *mark[3]))))

    # sysctls: exactly those vnet recorded changing
    for r in sysctl.observe(nss, sysctl.SysctlRecord(state_dir)):
        obs.add(r)

    # daemons: by pid file and command line
    for r in [*dnsmasq.observe(state_dir), *qemu.observe(state_dir)]:
        obs.add(r)

    obs.tables, rule_counts = nft.dump(host)
    r = nft.observe_table(host, names.nft_table(topology), obs.tables, rule_counts)
    if r is not None and r.get("digest") is not None:
        obs.add(r)

    for rt in host.nl.routes(table=rtnl.RT_TABLE_MAIN):
        dev = by_index.get(rt.oif)
        if rt.dst_len == 0:
            if obs.default_uplink is None and dev is not None:
                obs.default_uplink = dev.name
            continue
        obs.routes.append((ipaddress.IPv4Network(f"{rt.dst}/{rt.dst_len}", strict=False), dev.name if dev else None))
    return obs
