"""One topology over several hosts: which host this is, and its part of the topology.

A topology with `hosts:` is the same file on every host. Each host finds itself among `hosts:`
by an address it holds (or is named with --host), and builds only its own endpoints and VMs; the
networks with `overlay:` reach the other hosts through one VXLAN device each (kinds/vxlan.py).

`localize` is pure; `locate` reads the target namespace's addresses.
"""

from __future__ import annotations

import ipaddress

from vnet.errors import Problem, SpecError
from vnet.facts import HostFacts
from vnet.spec.models import NetworkSpec, Topology

OVERHEAD_V4, OVERHEAD_V6 = 50, 70  # outer IP + UDP + VXLAN + inner Ethernet header


def overhead(address: str) -> int:
    return OVERHEAD_V6 if ipaddress.ip_address(address).version == 6 else OVERHEAD_V4


def mtu(net: NetworkSpec, facts: HostFacts) -> int | None:
    """The network's MTU: as written, else the underlay's minus the tunnel's overhead."""
    if net.mtu or net.overlay is None or facts.underlay_mtu is None or facts.underlay is None:
        return net.mtu
    return facts.underlay_mtu - overhead(facts.underlay)


def dhcp_host(topo: Topology, net_name: str) -> str | None:
    """The host that serves DHCP/DNS on an overlay network: `dhcp: {host:}`, else the first."""
    net = topo.networks[net_name]
    if net.overlay is None or not topo.hosts:
        return None
    return (net.dhcp.host if net.dhcp and net.dhcp.host else None) or next(iter(topo.hosts))


def peers(topo: Topology, facts: HostFacts) -> tuple[str, ...]:
    """The other hosts' underlay addresses, sorted."""
    return tuple(sorted(a for h, a in topo.hosts.items() if h != facts.host))


def reflectors(topo: Topology) -> tuple[str, ...]:
    """The hosts named in `evpn: {route_reflectors:}` (those of hosts:), in the order written."""
    if topo.evpn is None:
        return ()
    return tuple(h for h in topo.evpn.route_reflectors if h in topo.hosts)


def bgp_peers(topo: Topology, facts: HostFacts) -> tuple[tuple[str, bool], ...]:
    """(underlay address, is a route-reflector client of this host) of this host's BGP peers,
    sorted by address. Full mesh without route reflectors; with them, a reflector peers with every
    other host (the non-reflectors as its clients) and any other host only with the reflectors."""
    rrs = reflectors(topo)
    out = []
    for h, a in topo.hosts.items():
        if h == facts.host:
            continue
        if not rrs:
            out.append((a, False))
        elif facts.host in rrs:
            out.append((a, h not in rrs))
        elif h in rrs:
            out.append((a, False))
    return tuple(sorted(out))


def remote_macs(whole: Topology, net_name: str, facts: HostFacts) -> tuple[str, ...]:
    """"MAC@underlay" of every endpoint, VM NIC and DHCP/DNS service on `net_name` that another
    host holds: the static unicast FDB of `control: static`, sorted."""
    from vnet import names, qemuargs
    from vnet.facts import guest_mac
    from vnet.spec.models import TunSpec

    out = []
    for ep_name, ep in whole.endpoints.items():
        if not isinstance(ep, TunSpec) and ep.network == net_name and ep.host != facts.host and ep.host in whole.hosts:
            out.append(f"{guest_mac(whole, ep_name)}@{whole.hosts[ep.host]}")
    for vm_name, vm in whole.vms.items():
        for i, nic in enumerate(vm.nics):
            if nic.network == net_name and vm.host != facts.host and vm.host in whole.hosts:
                out.append(f"{qemuargs.nic_mac(whole, vm_name, i)}@{whole.hosts[vm.host]}")
    net = whole.networks[net_name]
    server = dhcp_host(whole, net_name)
    if (net.dhcp or net.dns) and server is not None and server != facts.host:
        out.append(f"{names.local_mac(whole.name, net_name, 'svc')}@{whole.hosts[server]}")
    return tuple(sorted(out))


def localize(topo: Topology, facts: HostFacts) -> tuple[Topology, HostFacts]:
    """This host's part of a topology with `hosts:` (its endpoints and VMs, the overlay MTU
    written into each overlay network), and facts that keep the whole topology. Unchanged for a
    topology without `hosts:`."""
    if not topo.hosts or facts.host is None:
        return topo, facts
    here = facts.host
    networks = {n: net.model_copy(update={"mtu": mtu(net, facts)}) for n, net in topo.networks.items()}
    local = topo.model_copy(update={
        "networks": networks,
        "endpoints": {n: ep for n, ep in topo.endpoints.items() if ep.host == here},
        "vms": {n: vm for n, vm in topo.vms.items() if vm.host == here},
    })
    whole = topo.model_copy(update={"networks": networks})
    return local, facts.replace(whole=whole)


def locate(netns: str | None, topo: Topology, given: str | None = None) -> dict:
    """HostFacts fields of this host: `host`, `underlay` and `underlay_mtu`. SpecError (before
    anything changes) when the host is named wrong, or found by no address here, or an overlay
    network's `mtu:` does not fit the underlay."""
    from vnet.drivers.ns import Namespace

    if not topo.hosts:
        if given:
            raise SpecError([Problem("hosts", f"--host {given} was given but the topology declares no hosts:", "remove --host, or add hosts:")])
        return {}
    ns = Namespace(netns)
    try:
        addresses = ns.nl.all_addresses()
        links = {li.index: li for li in ns.nl.links()}
    finally:
        ns.close()
    held = {ipaddress.ip_address(a): idx for idx, a in addresses}
    if given is not None:
        if given not in topo.hosts:
            raise SpecError([Problem("hosts", f"--host {given} is not one of hosts: ({', '.join(topo.hosts)})", "name one of them")])
        host = given
    else:
        here = [h for h, a in topo.hosts.items() if ipaddress.ip_address(a) in held]
        if len(here) != 1:
            what = "none of their addresses is" if not here else f"{', '.join(here)} all are"
            raise SpecError([Problem("hosts", f"cannot tell which host this is: {what} held in {'namespace ' + netns if netns else 'this namespace'}",
                                     "add this host's underlay address to hosts:, or name it with --host")])
        host = here[0]
    underlay = topo.hosts[host]
    idx = held.get(ipaddress.ip_address(underlay))
    link = links.get(idx) if idx is not None else None
    underlay_mtu = link.mtu if link is not None else None
    if link is None and any(net.overlay for net in topo.networks.values()):
        raise SpecError([Problem(f"hosts.{host}", f"{underlay} is not an address of this host", "write the address the other hosts reach it by")])
    problems = []
    for net_name, net in topo.networks.items():
        if net.overlay and net.mtu and underlay_mtu and net.mtu + overhead(underlay) > underlay_mtu:
            problems.append(Problem(f"networks.{net_name}.mtu", f"{net.mtu} does not fit in the underlay's {underlay_mtu} with VXLAN's {overhead(underlay)} bytes",
                                    f"use at most {underlay_mtu - overhead(underlay)}, or omit it"))
    if problems:
        raise SpecError(problems)
    return {"host": host, "underlay": underlay, "underlay_mtu": underlay_mtu}
