"""VXLAN: one device per overlay network and host, a port of the network's bridge, that carries
the network to the other hosts of `hosts:`.

`control: evpn` leaves the FDB to FRR's zebra (kinds/frr.py): the device's mark ends in `:evpn`,
and its FDB is neither written nor read back by vnet. Its bridge port gets `learning off` (remote
MACs come from type-2 routes, as zebra's extern_learn entries) and `neigh_suppress on` (ARP and ND
for addresses EVPN knows are answered on this host, not flooded to every other).

`control: static` floods by head-end replication: one all-zero FDB entry per other host (the
`peers` attribute), and sends unicast straight to the host that holds the MAC: one entry per
endpoint, VM NIC and DHCP/DNS service of the other hosts, whose MACs the topology fixes (`macs`,
"MAC@address"). Both are reconciled on every apply, so a host removed from `hosts:` leaves every
other host's FDB. A change of VNI, port or local address makes the device anew; peers, MTU and
bridge change in place.
"""

from __future__ import annotations

from typing import Iterable

from vnet import names, overlay
from vnet.drivers import netlink
from vnet.facts import HostFacts, bridge_name
from vnet.kinds.base import Ctx, Kind
from vnet.kinds.links import LinkKind
from vnet.resources import Resource, make
from vnet.spec.models import Topology


def devices(topo: Topology, facts: HostFacts) -> list[tuple[str, str, int]]:
    """(network, vxlan device, UDP port) of each overlay network on this host."""
    if facts.host is None:
        return []
    return [(n, names.vxlan(topo.name, n), net.overlay.port) for n, net in topo.networks.items() if net.overlay is not None]


class Vxlan(LinkKind):
    name = "vxlan"
    after = ("bridge",)
    link_roles = ("vxlan",)

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        out = []
        for net_name, dev, port in devices(topo, facts):
            net = topo.networks[net_name]
            evpn = ("evpn",) if net.overlay.control == "evpn" else ()
            out.append(make(
                "vxlan", dev,
                mark=names.link_mark(topo.name, "vxlan", net_name, *evpn),
                vni=net.overlay.vni, port=port, local=facts.underlay, learning=False,
                master=bridge_name(topo, net_name), mtu=net.mtu,
                peers=overlay.peers(topo, facts) if net.overlay.control == "static" else (),
                macs=overlay.remote_macs(facts.whole or topo, net_name, facts) if net.overlay.control == "static" else (),
            ))
        return out

    def from_link(self, view, li) -> Iterable[Resource]:
        d = li.data
        mark = view.alias(li)
        parsed = names.parse_mark(mark)
        if parsed is not None and parsed[3] == ("evpn",):
            peers, macs = (), ()  # zebra's, from EVPN routes: not vnet's to read back or reconcile
        else:
            peers, macs = netlink.static_fdb(view.nss.host, li.index)
        yield make("vxlan", li.name, mark=mark, vni=d.get("vni"), port=d.get("port"), local=d.get("local"),
                   learning=d.get("learning"), master=li.master, mtu=li.mtu, peers=peers, macs=macs)

    def create(self, ctx: Ctx, r: Resource) -> None:
        netlink.create_vxlan(ctx.nss, r)
        if _evpn(r):
            _evpn_port(ctx, r)

    def update(self, ctx: Ctx, old: Resource, new: Resource) -> None:
        """Peers, MTU, bridge and mark in place; a new VNI, port or local address: a new device."""
        changed = {k for k in set(old.a) | set(new.a) if old.get(k) != new.get(k)}
        if changed <= netlink.IN_PLACE | {"peers", "macs"}:
            if changed & netlink.IN_PLACE:
                netlink.set_in_place(ctx.nss, new)
            if changed & {"peers", "macs"}:
                netlink.set_fdb(ctx.nss, new.key, netlink.fdb_entries(old), netlink.fdb_entries(new))
            if _evpn(new) and changed & {"mark", "master"}:
                _evpn_port(ctx, new)
        else:
            self.delete(ctx, old)
            self.create(ctx, new)


def _evpn(r: Resource) -> bool:
    parsed = names.parse_mark(r.get("mark"))
    return parsed is not None and parsed[3] == ("evpn",)


def _evpn_port(ctx: Ctx, r: Resource) -> None:
    """The bridge port of an EVPN vxlan device: no learning, neighbour suppression."""
    ctx.nss.host.run(["bridge", "link", "set", "dev", r.key, "learning", "off", "neigh_suppress", "on"])


KINDS = (Vxlan(),)
