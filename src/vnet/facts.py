"""Facts of a topology and its host that desired state and every renderer share: bridge names,
uplinks, the ports vnet makes, guest MACs, and what was read from the host (`HostFacts`).

It sits below `desired.py` and the renderers (nftables, dnsmasq), so that they import it and not
each other. Pure: no I/O.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vnet import names, qemuargs
from vnet.values import Frozen, _set, per_topology
from vnet.spec.models import NetnsSpec, TapSpec, Topology, TunSpec
from vnet.spec.validate import forward_target, known_address


_FACTS = ("default_uplink", "resolvers", "kvm", "vhost_net", "state", "target", "tiny_guest", "iptables", "host", "underlay",
          "underlay_mtu", "whole", "flowtables")
_FACTS_COMPARED = tuple(f for f in _FACTS if f not in ("iptables", "whole"))


class HostFacts(Frozen):
    """What desired state needs to know of the host; compared and hashed without `iptables` and
    `whole`. `replace(**changes)` makes a changed copy."""

    __slots__ = _FACTS
    _compared = _FACTS_COMPARED
    default_uplink: str | None  # interface of the default route, for nat without `uplink:`
    resolvers: tuple[str, ...]  # the host's DNS servers: default upstream of vnet's DNS
    kvm: bool  # KVM runs guests here (probed), for accel: auto
    vhost_net: bool  # /dev/vhost-net exists
    state: Path  # the topology's state directory: where daemons keep their files
    target: str  # names.target_id of the target namespace: marked on the namespaces vnet makes
    tiny_guest: tuple[str, str] | None  # (kernel, initrd) of the built-in test guest, when a VM uses it
    # iptables' filter table as read (drivers.iptables.Filter), when another firewall may drop
    # what vnet forwards; None where it was not read (then vnet adds no iptables rules). Not compared.
    iptables: Any
    # a topology with `hosts:` (overlay.py): which of them this is, its underlay address and that
    # address's link MTU, found in the target namespace (or named by --host)
    host: str | None
    underlay: str | None
    underlay_mtu: int | None
    # the whole topology, where desired state works on this host's part of it (DNS/DHCP serve all). Not compared.
    whole: Any
    flowtables: bool  # the kernel offloads flows to an nftables flowtable (probed where a nat network would use one)

    def __init__(self, default_uplink: str | None = None, resolvers: tuple[str, ...] = (), kvm: bool = False,
                 vhost_net: bool = False, state: Path = Path("/run/vnet/_"), target: str = "",
                 tiny_guest: tuple[str, str] | None = None, iptables: Any = None, host: str | None = None,
                 underlay: str | None = None, underlay_mtu: int | None = None, whole: Any = None, flowtables: bool = False) -> None:
        _set(self, "default_uplink", default_uplink)
        _set(self, "resolvers", resolvers)
        _set(self, "kvm", kvm)
        _set(self, "vhost_net", vhost_net)
        _set(self, "state", state)
        _set(self, "target", target)
        _set(self, "tiny_guest", tiny_guest)
        _set(self, "iptables", iptables)
        _set(self, "host", host)
        _set(self, "underlay", underlay)
        _set(self, "underlay_mtu", underlay_mtu)
        _set(self, "whole", whole)
        _set(self, "flowtables", flowtables)

    def replace(self, **changes: Any) -> HostFacts:
        """A copy with `changes` (as dataclasses.replace did)."""
        return HostFacts(**{**{f: getattr(self, f) for f in _FACTS}, **changes})



_PORT = ("ifname", "mac", "address", "isolated", "spoofing", "rate", "network")


class Port(Frozen):
    """A bridge port vnet makes for an endpoint or a VM NIC, with what it may do."""

    __slots__ = _PORT
    ifname: str  # host side: the tap, or the host end of the veth
    mac: str  # the MAC the guest/container sends from
    address: str | None  # its fixed IPv4 address, when known
    isolated: bool
    spoofing: str
    rate: str | None
    network: str  # the network whose bridge it joins

    def __init__(self, ifname: str, mac: str, address: str | None, isolated: bool, spoofing: str, rate: str | None,
                 network: str = "") -> None:
        _set(self, "ifname", ifname)
        _set(self, "mac", mac)
        _set(self, "address", address)
        _set(self, "isolated", isolated)
        _set(self, "spoofing", spoofing)
        _set(self, "rate", rate)
        _set(self, "network", network)


def ports(topo: Topology) -> list[Port]:
    """The ports of a topology. Desired state asks twice (rate limits, the ruleset): they are
    worked out once per topology (topologies are frozen models)."""
    return list(_ports(topo, None))


@per_topology
def _ports(topo: Topology, _: None = None) -> tuple[Port, ...]:
    out = []
    t = topo.name
    for ep_name, ep in topo.endpoints.items():
        if isinstance(ep, TunSpec) or getattr(ep, "network", None) is None:
            continue
        ifname = names.endpoint_tap(t, ep_name, ep.ifname) if isinstance(ep, TapSpec) else names.endpoint_veth(t, ep_name, ep.host_ifname)
        ip = known_address(topo, ep_name, ep.network)
        out.append(Port(ifname, guest_mac(topo, ep_name), str(ip) if ip else None, ep.isolated, ep.spoofing, ep.rate, ep.network))
    for vm_name, vm in topo.vms.items():
        for i, nic in enumerate(vm.nics):
            out.append(
                Port(qemuargs.nic_tap(topo, vm_name, i), qemuargs.nic_mac(topo, vm_name, i), nic.address,
                     nic.isolated, nic.spoofing, nic.rate, nic.network)
            )
    return tuple(out)


@per_topology
def _by_network(topo: Topology, _: None = None) -> dict[str, tuple[tuple[str, Any], ...]]:
    out: dict[str, list[tuple[str, Any]]] = {}
    for ep_name, ep in topo.endpoints.items():
        net_name = getattr(ep, "network", None)
        if net_name is not None:
            out.setdefault(net_name, []).append((ep_name, ep))
    return {net_name: tuple(eps) for net_name, eps in out.items()}


def endpoints_on(topo: Topology, net_name: str) -> tuple[tuple[str, Any], ...]:
    """(name, spec) of the endpoints on one network, in the file's order. Grouped once per
    topology: the DNS and DHCP config of each network searched every endpoint, O(networks ×
    endpoints), 100 ms of the desired state at 10,000 endpoints on 100 networks."""
    return _by_network(topo, None).get(net_name, ())


def hairpin_ports(topo: Topology) -> frozenset[str]:
    """Ports that are the target of a forward. A target that opens its own forward on the host's
    address is answered back out of the port it came in on (with br_netfilter the DNAT'ed frame
    is bridged, not routed), which only a port in hairpin mode allows; other ports stay without
    it, so no other guest sees its own broadcasts reflected."""
    targets = {str(address) for net_name, net in topo.networks.items() for fwd in net.forwards
               for address in [forward_target(topo, net_name, fwd.to)[0]] if address is not None}
    return frozenset(p.ifname for p in ports(topo) if p.address in targets) if targets else frozenset()


def bridge_name(topo: Topology, net_name: str) -> str:
    return topo.networks[net_name].bridge or names.bridge(topo.name, net_name)


def uplink_of(topo: Topology, net_name: str, facts: HostFacts) -> str | None:
    """Where a network's traffic leaves the host. A NIC that a bridged network of the same
    topology puts in its bridge carries nothing itself any more: the bridge, which takes its
    addresses and routes, is the way out (before apply and after alike, so the plan settles)."""
    up = topo.networks[net_name].uplink or facts.default_uplink
    for other_name, other in topo.networks.items():
        if other.mode == "bridged" and up in (other.uplink, bridge_name(topo, other_name)):
            return bridge_name(topo, other_name)
    return up


def offloading(topo: Topology) -> list[str]:
    """The networks whose established flows go to the kernel's flowtable where it has one: nat
    networks, unless `offload: false`."""
    return [name for name, net in topo.networks.items() if net.mode == "nat" and net.offload is not False]


@per_topology
def guest_mac(topo: Topology, ep_name: str) -> str:
    """Remembered per topology: the links, the ports and DNS each ask for every endpoint's (a
    digest each, three thousand at a thousand endpoints)."""
    ep = topo.endpoints[ep_name]
    return getattr(ep, "mac", None) or names.mac(topo.name, ep_name)


def endpoint_netns(topo: Topology, ep_name: str) -> str:
    ep = topo.endpoints[ep_name]
    assert isinstance(ep, NetnsSpec)
    return names.endpoint_netns(topo.name, ep_name, ep.netns)


def forward_paths(topo: Topology, facts: HostFacts) -> list[tuple[str, str, str | None]]:
    """(in, out, conntrack states) of the traffic vnet forwards: what a foreign FORWARD DROP
    policy must let through (vnet's own table still filters all of it)."""
    paths: list[tuple[str, str, str | None]] = []
    for net_name, net in topo.networks.items():
        br = bridge_name(topo, net_name)
        paths.append((br, br, None))  # switched inside the bridge: crosses FORWARD with br_netfilter
        up = uplink_of(topo, net_name, facts) if net.mode == "nat" else None
        if up:
            paths.append((br, up, None))
            paths.append((up, br, "RELATED,ESTABLISHED"))
            if net.forwards:
                paths.append((up, br, "DNAT"))
    for allow in topo.allow:
        if allow.from_ in topo.networks and allow.to in topo.networks:
            a, b = bridge_name(topo, allow.from_), bridge_name(topo, allow.to)
            paths.append((a, b, None))
            paths.append((b, a, "RELATED,ESTABLISHED"))
    return paths
