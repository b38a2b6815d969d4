"""Bridges, taps/tuns and veth pairs: links of the target namespace that carry vnet's mark in
their ifalias. Deleted one after another, they are deleted as one link group (see
drivers.netlink.delete_links)."""

from __future__ import annotations

from typing import Iterable

from vnet import names
from vnet.drivers import netlink
from vnet.facts import HostFacts, bridge_name, endpoint_netns, guest_mac, hairpin_ports
from vnet.kinds.address import BRIDGE_ADDRESS, Address, address, observed_addresses
from vnet.kinds.base import Ctx, Kind
from vnet.kinds.route import observed_routes
from vnet.resources import Resource, make, ns_key
from vnet.spec.models import NetnsSpec, TapSpec, Topology, TunSpec
from vnet.spec.validate import addressing, addressing6, principal_id

HOST = ""  # the target namespace


def hairpin(port: str, hairpins) -> dict:
    """The port's hairpin attribute, only where it is on: every other port's resource stays as it
    was (no attribute to compare, no request to make)."""
    return {"hairpin": True} if port in hairpins else {}


class LinkKind(Kind):
    batch = "links"

    def delete(self, ctx: Ctx, r: Resource) -> None:
        netlink.delete_link(ctx.nss, r)

    def delete_many(self, ctx: Ctx, rs: list[Resource]) -> None:
        netlink.delete_links(ctx.nss, rs)

    def update(self, ctx: Ctx, old: Resource, new: Resource) -> None:
        """Change in place what can change in place; make the link anew otherwise."""
        if netlink.changes_in_place(old, new):
            netlink.set_in_place(ctx.nss, new, old)
        else:
            self.delete(ctx, old)
            self.create(ctx, new)

    def sweep(self, ctx: Ctx, r: Resource, obs) -> None:
        li = obs.links.get(r.key)
        if li is not None and li.mark is None and r.id not in obs.owned:
            netlink.delete_link(ctx.nss, r)


class Bridge(LinkKind):
    name = "bridge"
    after = ("netns",)
    link_roles = ("bridge",)

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        out = []
        for net_name, net in topo.networks.items():
            br = bridge_name(topo, net_name)
            # a fixed MAC keeps the bridge's address stable as ports come and go; in bridged mode
            # the bridge takes the uplink's MAC instead, so the LAN sees the host unchanged
            mac = net.mac or (None if net.mode == "bridged" else names.local_mac(topo.name, net_name, "bridge"))
            out.append(make("bridge", br, mark=names.link_mark(topo.name, "bridge", net_name, net.mode), mtu=net.mtu, mac=mac))
            addr = addressing(topo, net_name)
            if addr.gateway is not None and addr.subnet is not None:
                out.append(address(HOST, br, f"{addr.gateway}/{addr.subnet.prefixlen}", BRIDGE_ADDRESS))
            addr6 = addressing6(topo, net_name)
            if addr6.gateway is not None and addr6.subnet is not None:
                out.append(address(HOST, br, f"{addr6.gateway}/{addr6.subnet.prefixlen}", BRIDGE_ADDRESS))
        return out

    def from_link(self, view, li) -> Iterable[Resource]:
        yield make("bridge", li.name, mark=view.alias(li), mtu=li.mtu, mac=li.mac)
        if li.mark[3][:1] == ("bridged",):
            return  # its addresses are the uplink's, carried by the uplink resource
        yield from observed_addresses(view.addresses(""), HOST, li.name, li.index, BRIDGE_ADDRESS)

    def create(self, ctx: Ctx, r: Resource) -> None:
        netlink.create_bridge(ctx.nss, r)


class BridgeAddress(Address):
    """A network's own address on its bridge in the target namespace (a nat network's gateway, the
    host's address on a host network). Made right after the bridge rather than after every
    endpoint's link, so that what binds to it (the network's dnsmasq) can start while the
    endpoints are still being made."""

    name = BRIDGE_ADDRESS
    after = ("bridge",)


class Tap(LinkKind):
    """A tap (for QEMU) or a tun (for a user-space program), persistent, owned by a user."""

    name = "tap"
    after = ("bridge",)
    link_roles = ("tap", "tun")
    create_batch = "taps"  # every device made in one trip into the target namespace (netlink.create_taps)

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        out = []
        t = topo.name
        hairpins = hairpin_ports(topo)
        for ep_name, ep in topo.endpoints.items():
            if not isinstance(ep, (TapSpec, TunSpec)):
                continue
            network = getattr(ep, "network", None)
            name = names.endpoint_tap(t, ep_name, ep.ifname)
            out.append(
                make(
                    "tap",
                    name,
                    mark=names.link_mark(t, ep.kind, ep_name),
                    mode=ep.kind,
                    owner=principal_id(ep.owner, "user"),
                    group=principal_id(ep.group, "group"),
                    master=bridge_name(topo, network) if network else None,
                    mac=names.tap_mac(guest_mac(topo, ep_name)) if ep.kind == "tap" else None,
                    mtu=topo.networks[network].mtu if network else None,
                    **hairpin(name, hairpins),
                )
            )
            if isinstance(ep, TunSpec) and ep.address:
                out.append(address(HOST, name, ep.address))
        return out

    def from_link(self, view, li) -> Iterable[Resource]:
        yield make("tap", li.name, mark=view.alias(li), master=li.master, mac=li.mac, mtu=li.mtu, **netlink.tun_attrs(li.data),
                   **hairpin(li.name, {li.name} if li.data.get("hairpin") else ()))
        yield from observed_addresses(view.addresses(""), HOST, li.name, li.index)

    def create(self, ctx: Ctx, r: Resource) -> None:
        netlink.create_tap(ctx.nss, r)

    def create_many(self, ctx: Ctx, rs: list[Resource]) -> None:
        netlink.create_taps(ctx.nss, rs)


class Veth(LinkKind):
    """A veth pair: the host end a port of the bridge, the peer inside the endpoint's namespace."""

    name = "veth"
    after = ("bridge", "netns")
    link_roles = ("veth",)
    reads_namespaces = True  # the peer's end, addresses and routes
    create_batch = "veths"  # every pair made before any peer comes up (netlink.create_veths)

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        out = []
        t = topo.name
        hairpins = hairpin_ports(topo)
        for ep_name, ep in topo.endpoints.items():
            if not isinstance(ep, NetnsSpec):
                continue
            ns = endpoint_netns(topo, ep_name)
            out.append(
                make(
                    "veth",
                    names.endpoint_veth(t, ep_name, ep.host_ifname),
                    mark=names.link_mark(t, "veth", ep_name, ns),
                    master=bridge_name(topo, ep.network) if ep.network else None,
                    mac=names.local_mac(t, ep_name, "host"),
                    peer_ns=ns,
                    peer_name=ep.ifname,
                    peer_mac=guest_mac(topo, ep_name),
                    peer_mark=names.link_mark(t, "veth-peer", ep_name),
                    mtu=topo.networks[ep.network].mtu if ep.network else None,
                    **hairpin(names.endpoint_veth(t, ep_name, ep.host_ifname), hairpins),
                )
            )
            if ep.address:
                out.append(address(ns, ep.ifname, ep.address))
                addr = addressing(topo, ep.network)
                if addr.gateway is not None:
                    out.append(make("route", ns_key(ns, "default"), ns=ns, dst="default", gateway=str(addr.gateway), ifname=ep.ifname))
            if ep.address6:
                out.append(address(ns, ep.ifname, ep.address6))
                addr6 = addressing6(topo, ep.network)
                if addr6.gateway is not None:
                    out.append(make("route", ns_key(ns, "::/0"), ns=ns, dst="::/0", gateway=str(addr6.gateway), ifname=ep.ifname))
        return out

    def from_link(self, view, li) -> Iterable[Resource]:
        extra = li.mark[3]
        peer_ns = extra[0] if extra else None
        attrs = dict(mark=view.alias(li), master=li.master, mac=li.mac, mtu=li.mtu, peer_ns=peer_ns, peer_name=None, peer_mac=None, peer_mark=None,
                     **hairpin(li.name, {li.name} if li.data.get("hairpin") else ()))
        if peer_ns and view.exists(peer_ns):
            inner_owned: dict[int, str] = {}
            for p in view.links(peer_ns).values():
                if p.mark and p.mark[:3] == (view.topology, "veth-peer", li.mark[2]):
                    attrs.update(peer_name=p.name, peer_mac=p.mac, peer_mark=view.alias(p))
                    inner_owned[p.index] = p.name
                    yield from observed_addresses(view.addresses(peer_ns), peer_ns, p.name, p.index)
            yield from observed_routes(view.routes(peer_ns), peer_ns, inner_owned)
        yield make("veth", li.name, **attrs)

    def link_namespace(self, li) -> str | None:
        extra = li.mark[3]
        return extra[0] if extra else None

    def namespaces(self, r: Resource) -> tuple[str, ...]:
        return (r.get("peer_ns"),) if r.get("peer_ns") else ()

    def create(self, ctx: Ctx, r: Resource) -> None:
        netlink.create_veth(ctx.nss, r)

    def create_many(self, ctx: Ctx, rs: list[Resource]) -> None:
        netlink.create_veths(ctx.nss, rs)


KINDS = (Bridge(), BridgeAddress(), Tap(), Veth())
