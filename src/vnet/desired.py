"""Topology → the set of resources the host should hold. Pure: no I/O.

The only facts taken from the host are passed in (`HostFacts`), so the function can be tested
without root and the same inputs always give the same resources.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vnet import dnsconf, names, nftrules, qemuargs
from vnet.resources import Resource, make, ns_key
from vnet.spec.models import NetnsSpec, TapSpec, Topology, TunSpec, rate_bits
from vnet.spec.validate import addressing, principal_id
from vnet.drivers.dnsmasq import digest as config_digest
from vnet.drivers.qemu import digest as argv_digest

HOST = ""  # the target namespace


@dataclass(frozen=True)
class HostFacts:
    """What desired state needs to know of the host."""

    default_uplink: str | None = None  # interface of the default route, for nat without `uplink:`
    resolvers: tuple[str, ...] = ()  # the host's DNS servers: default upstream of vnet's DNS
    kvm: bool = False  # KVM runs guests here (probed), for accel: auto
    vhost_net: bool = False  # /dev/vhost-net exists
    state: Path = Path("/run/vnet/_")  # the topology's state directory: where daemons keep their files
    tiny_guest: tuple[str, str] | None = None  # (kernel, initrd) of the built-in test guest, when a VM uses it


@dataclass(frozen=True)
class Port:
    """A bridge port vnet makes for an endpoint or a VM NIC, with what it may do."""

    ifname: str  # host side: the tap, or the host end of the veth
    mac: str  # the MAC the guest/container sends from
    address: str | None  # its fixed IPv4 address, when known
    isolated: bool
    spoofing: str
    rate: str | None


def ports(topo: Topology) -> list[Port]:
    from vnet.spec.validate import known_address

    out = []
    t = topo.name
    for ep_name, ep in topo.endpoints.items():
        if isinstance(ep, TunSpec) or getattr(ep, "network", None) is None:
            continue
        ifname = names.endpoint_tap(t, ep_name, ep.ifname) if isinstance(ep, TapSpec) else names.veth_host(t, ep_name)
        ip = known_address(topo, ep_name, ep.network)
        out.append(Port(ifname, guest_mac(topo, ep_name), str(ip) if ip else None, ep.isolated, ep.spoofing, ep.rate))
    for vm_name, vm in topo.vms.items():
        for i, nic in enumerate(vm.nics):
            out.append(
                Port(qemuargs.nic_tap(topo, vm_name, i), qemuargs.nic_mac(topo, vm_name, i), nic.address,
                     nic.isolated, nic.spoofing, nic.rate)
            )
    return out


def bridge_name(topo: Topology, net_name: str) -> str:
    return topo.networks[net_name].bridge or names.bridge(topo.name, net_name)


def uplink_of(topo: Topology, net_name: str, facts: HostFacts) -> str | None:
    return topo.networks[net_name].uplink or facts.default_uplink


def guest_mac(topo: Topology, ep_name: str) -> str:
    ep = topo.endpoints[ep_name]
    return getattr(ep, "mac", None) or names.mac(topo.name, ep_name)


def endpoint_netns(topo: Topology, ep_name: str) -> str:
    ep = topo.endpoints[ep_name]
    assert isinstance(ep, NetnsSpec)
    return names.endpoint_netns(topo.name, ep_name, ep.netns)


def desired(topo: Topology, facts: HostFacts = HostFacts()) -> list[Resource]:
    out: list[Resource] = []
    t = topo.name

    for net_name, net in topo.networks.items():
        br = bridge_name(topo, net_name)
        mark = names.link_mark(t, "bridge", net_name, net.mode)
        # a fixed MAC keeps the bridge's address stable as ports come and go; in bridged mode the
        # bridge takes the uplink's MAC instead, so the LAN sees the host unchanged
        mac = None if net.mode == "bridged" else names.local_mac(t, net_name, "bridge")
        out.append(make("bridge", br, mark=mark, mtu=net.mtu, mac=mac))
        addr = addressing(topo, net_name)
        if addr.gateway is not None and addr.subnet is not None:
            out.append(_address(HOST, br, f"{addr.gateway}/{addr.subnet.prefixlen}"))
        if net.mode == "bridged":
            out.append(make("uplink", net.uplink, bridge=br))
    # forwarding only on the interfaces that need it, never the host-wide ip_forward: a nat
    # network's bridge and uplink, and both bridges of an allowed pair (IPv4 asks the input device)
    forwarding: list[str] = []
    for net_name, net in topo.networks.items():
        if net.mode == "nat":
            forwarding += [bridge_name(topo, net_name), uplink_of(topo, net_name, facts)]
    for rule in topo.allow:
        forwarding += [bridge_name(topo, rule.from_), bridge_name(topo, rule.to)]
    for dev in dict.fromkeys(forwarding):
        path = f"net/ipv4/conf/{dev}/forwarding"
        out.append(make("sysctl", ns_key(HOST, path), ns=HOST, path=path, value="1"))

    for ep_name, ep in topo.endpoints.items():
        network = getattr(ep, "network", None)
        master = bridge_name(topo, network) if network else None
        mtu = topo.networks[network].mtu if network else None
        if isinstance(ep, (TapSpec, TunSpec)):
            name = names.endpoint_tap(t, ep_name, ep.ifname)
            role = ep.kind
            out.append(
                make(
                    "tap",
                    name,
                    mark=names.link_mark(t, role, ep_name),
                    mode=ep.kind,
                    owner=principal_id(ep.owner, "user"),
                    group=principal_id(ep.group, "group"),
                    master=master,
                    mac=names.tap_mac(guest_mac(topo, ep_name)) if ep.kind == "tap" else None,
                    mtu=mtu,
                )
            )
            if isinstance(ep, TunSpec) and ep.address:
                out.append(_address(HOST, name, ep.address))
        elif isinstance(ep, NetnsSpec):
            ns = endpoint_netns(topo, ep_name)
            if ep.netns is None:
                out.append(make("netns", ns, mark=names.link_mark(t, "netns", ep_name)))
            host_end = names.veth_host(t, ep_name)
            out.append(
                make(
                    "veth",
                    host_end,
                    mark=names.link_mark(t, "veth", ep_name, ns),
                    master=master,
                    mac=names.local_mac(t, ep_name, "host"),
                    peer_ns=ns,
                    peer_name=ep.ifname,
                    peer_mac=guest_mac(topo, ep_name),
                    peer_mark=names.link_mark(t, "veth-peer", ep_name),
                    mtu=mtu,
                )
            )
            if ep.address:
                out.append(_address(ns, ep.ifname, ep.address))
                addr = addressing(topo, ep.network)
                if addr.gateway is not None:
                    out.append(make("route", ns_key(ns, "default"), ns=ns, dst="default", gateway=str(addr.gateway), ifname=ep.ifname))

    out += _services(topo, facts)
    out += _vms(topo, facts)
    port_list = ports(topo)
    for port in port_list:
        if port.rate:
            out.append(make("qdisc", port.ifname, rate=rate_bits(port.rate)))

    rules = nftrules.render(topo, facts, port_list)
    if rules is not None:
        out.append(
            make("ruleset", names.nft_table(t), {"text": rules.text, "rendered": True},
                 digest=rules.digest, elements=rules.elements, rules=rules.rules)
        )
    return out


def _services(topo: Topology, facts: HostFacts) -> list[Resource]:
    """One dnsmasq per network with DHCP or DNS. On an isolated network, whose bridge has no host
    address, it runs in a small namespace of its own attached to the bridge."""
    out: list[Resource] = []
    t = topo.name
    for net_name, net in topo.networks.items():
        if net.dhcp is None and net.dns is None:
            continue
        addr = addressing(topo, net_name)
        if net.mode == "isolated":
            ns = names.service_netns(t, net_name)
            out.append(make("netns", ns, mark=names.link_mark(t, "netns", f"svc-{net_name}")))
            out.append(
                make(
                    "veth",
                    names.veth_host(t, f"svc-{net_name}"),
                    mark=names.link_mark(t, "veth", f"svc-{net_name}", ns),
                    master=bridge_name(topo, net_name),
                    mac=names.local_mac(t, net_name, "svc-host"),
                    peer_ns=ns,
                    peer_name="eth0",
                    peer_mac=names.local_mac(t, net_name, "svc"),
                    peer_mark=names.link_mark(t, "veth-peer", f"svc-{net_name}"),
                    mtu=net.mtu,
                )
            )
            out.append(_address(ns, "eth0", f"{addr.service}/{addr.subnet.prefixlen}"))
            ifname = "eth0"
        else:
            ns, ifname = HOST, bridge_name(topo, net_name)
        config = dnsconf.render(topo, net_name, ifname, ns, list(facts.resolvers), facts.state)
        out.append(make("service", f"dnsmasq-{net_name}", {"config": config}, network=net_name, ns=ns, digest=config_digest(config)))
    return out


def _vms(topo: Topology, facts: HostFacts) -> list[Resource]:
    out: list[Resource] = []
    for vm_name, vm in topo.vms.items():
        user = qemuargs.run_user(vm.user)  # QEMU runs as this user and opens the taps it owns
        for i, nic in enumerate(vm.nics):
            out.append(
                make(
                    "tap",
                    qemuargs.nic_tap(topo, vm_name, i),
                    mark=names.link_mark(topo.name, "tap", f"{vm_name}.{i}"),
                    mode="tap",
                    owner=user.uid,
                    master=bridge_name(topo, nic.network),
                    mac=names.tap_mac(qemuargs.nic_mac(topo, vm_name, i)),
                    multi_queue=True if qemuargs.queues(topo, vm_name) > 1 else None,
                    mtu=topo.networks[nic.network].mtu,
                )
            )
        vhost = facts.vhost_net and qemuargs.device_usable("/dev/vhost-net", user)
        argv = qemuargs.argv(topo, vm_name, facts.state, kvm=facts.kvm, vhost=vhost, tiny=facts.tiny_guest, user=user)
        inputs = qemuargs.inputs(topo, vm_name, facts.tiny_guest)
        out.append(make("vm", vm_name, {"argv": argv, "inputs": inputs}, digest=argv_digest(argv, inputs)))
    return out


def _address(ns: str, ifname: str, cidr: str) -> Resource:
    ip, prefix = cidr.split("/")
    return make("address", ns_key(ns, ifname, cidr), ns=ns, ifname=ifname, address=ip, prefixlen=int(prefix))
