"""dnsmasq configuration for one network's DHCP and DNS. Pure: topology + facts → text.

dnsmasq binds only to the network's own interface (bind-interfaces), so it never answers on the
uplink and coexists with a resolver already listening elsewhere on the host.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

from vnet import names, qemuargs, snoop
from vnet.facts import endpoints_on, guest_mac
from vnet.names import GATEWAY_NAME, hostname, nic_hostname
from vnet.spec.models import NetnsSpec, TapSpec, iface4, iface6
from vnet.spec.validate import addressing, addressing6, dhcp6_range, dhcp_range

if TYPE_CHECKING:
    from vnet.spec.models import Topology


def eui64(prefix: ipaddress.IPv6Network, mac: str) -> ipaddress.IPv6Address:
    """The address SLAAC gives a NIC with this MAC in a /64: the MAC with ff:fe in its middle
    and its universal/local bit flipped (RFC 4291), what Linux guests take by default."""
    b = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:6]
    return prefix[int.from_bytes(iid, "big")]


def _nics(topo: Topology, net_name: str) -> list[tuple[str, str, str | None]]:
    """(DNS name, MAC, declared IPv6 address) of every endpoint and VM NIC on a network."""
    out: list[tuple[str, str, str | None]] = []
    for ep_name, ep in endpoints_on(topo, net_name):
        if isinstance(ep, (NetnsSpec, TapSpec)):
            six = getattr(ep, "address6", None)
            out.append((hostname(ep_name), guest_mac(topo, ep_name), str(iface6(six).ip) if six else None))
    for vm_name, vm in topo.vms.items():
        for i, nic in enumerate(vm.nics):
            if nic.network == net_name:
                out.append((nic_hostname(vm_name, i), qemuargs.nic_mac(topo, vm_name, i), None))
    return out


RA = "enable-ra"


def advertises_routers(config: str) -> bool:
    """Whether a dnsmasq with this configuration sends router advertisements."""
    return RA in config.splitlines()


def ipv6_lines(topo: Topology, net_name: str, ifname: str) -> list[str]:
    """Router advertisements (SLAAC by default, or DHCPv6) and AAAA records of a network with
    subnet6. An isolated network advertises a router lifetime of 0: its prefix, no default route."""
    net = topo.networks[net_name]
    addr6 = addressing6(topo, net_name)
    if addr6.subnet is None:
        return []
    lease = net.dhcp.lease if net.dhcp else "1h"
    lines = [RA]
    rng = dhcp6_range(topo, net_name)
    if rng is None:
        # SLAAC; stateless DHCPv6 answers the DNS options; ra-names names dual-stack hosts too
        lines.append(f"dhcp-range=::,constructor:{ifname},ra-stateless,ra-names,{addr6.subnet.prefixlen},{lease}")
    else:
        lines.append(f"dhcp-range={rng[0]},{rng[1]},{addr6.subnet.prefixlen},{lease}")
    if net.mode == "isolated":
        lines.append(f"ra-param={ifname},60,0")
    if net.dns is not None:
        domain = net.dns.domain
        if addr6.gateway is not None:
            lines.append(f"host-record=gateway.{domain},gateway,{addr6.gateway}")
        for name, mac, fixed in _nics(topo, net_name):
            # a declared address, else the SLAAC address the NIC's MAC gives (DHCPv6 leases are
            # named by dnsmasq itself as it hands them out)
            six = fixed or (str(eui64(addr6.subnet, mac)) if rng is None else None)
            if six:
                lines.append(f"host-record={name}.{domain},{name},{six}")
    return lines


def files(state: Path, net_name: str) -> dict[str, Path]:
    """dnsmasq's files: config, pid and log in the state directory; the leases, which must outlive
    a reboot, in the lib directory (vnet.libdir)."""
    from vnet import libdir

    base = state / f"dnsmasq-{net_name}"
    out = {k: Path(f"{base}.{k}") for k in ("conf", "pid", "log")}
    out["leases"] = libdir.lib_of(state) / f"dnsmasq-{net_name}.leases"
    return out


def render(topo: Topology, net_name: str, ifname: str, netns: str, upstream: list[str], state: Path) -> str:
    net = topo.networks[net_name]
    addr = addressing(topo, net_name)
    assert addr.subnet is not None and addr.service is not None
    f = files(state, net_name)
    lines = [
        f"# {names.link_mark(topo.name, 'dnsmasq', net_name)} — written by vnet, replaced on every apply",
        f"# netns={netns}",  # where it runs; read back by observe
        f"interface={ifname}",
        "bind-interfaces",
        "except-interface=lo",
        f"pid-file={f['pid']}",
        f"log-facility={f['log']}",
        "no-hosts",
        "no-resolv",
    ]
    if net.dns is None:
        lines.append("port=0")
    else:
        domain = net.dns.domain
        lines += [f"domain={domain}", f"local=/{domain}/", "domain-needed", "bogus-priv"]
        if net.mode != "isolated":
            for server in net.dns.upstream if net.dns.upstream is not None else upstream:
                lines.append(f"server={server}")
        for ep_name, ep in endpoints_on(topo, net_name):
            if isinstance(ep, NetnsSpec) and ep.address:
                ip = iface4(ep.address).ip
                lines.append(f"host-record={hostname(ep_name)}.{domain},{hostname(ep_name)},{ip}")
        if addr.gateway is not None:
            lines.append(f"host-record={GATEWAY_NAME}.{domain},{GATEWAY_NAME},{addr.gateway}")
        for rec_name, ip in net.dns.records.items():
            lines.append(f"host-record={rec_name},{ip}")

    six = ipv6_lines(topo, net_name, ifname)
    if net.dhcp is None and six:
        lines.append(f"dhcp-leasefile={f['leases']}")
    lines += six
    if net.dhcp is not None:
        first, last = dhcp_range(topo, net_name)
        lines += [
            f"dhcp-leasefile={f['leases']}",
            f"dhcp-range={first},{last},{addr.subnet.netmask},{net.dhcp.lease}",
            "dhcp-authoritative",
            # no ICMP echo to an address before offering it: that check holds a DISCOVER's offer
            # for 3 s; vnet knows every address on its networks (fixed ones are dhcp-host entries)
            "no-ping",
            f"dhcp-script={snoop.script_path(state, net_name)}",  # DHCP snooping: each lease, as it happens
        ]
        # an empty option tells dnsmasq to send none: an isolated network has no router
        lines.append(f"dhcp-option=option:router,{addr.gateway}" if addr.gateway else "dhcp-option=option:router")
        lines.append(f"dhcp-option=option:dns-server,{addr.service}" if net.dns else "dhcp-option=option:dns-server")
        if net.dhcp.mtu or net.mtu:
            # an overlay's MTU is below Ethernet's: sent even to clients that do not ask for it
            force = "dhcp-option-force" if net.overlay is not None else "dhcp-option"
            lines.append(f"{force}=option:mtu,{net.dhcp.mtu or net.mtu}")
        if net.dhcp.routes:
            # clients that take option 121 ignore the router option, so the default route goes in too
            routes = [f"{r.to},{r.via}" for r in net.dhcp.routes]
            if addr.gateway:
                routes.append(f"0.0.0.0/0,{addr.gateway}")
            lines.append("dhcp-option=option:classless-static-route," + ",".join(routes))
        for ep_name, ep in endpoints_on(topo, net_name):
            mac = guest_mac(topo, ep_name)
            if isinstance(ep, NetnsSpec) and ep.address:
                lines.append(f"dhcp-host={mac},{iface4(ep.address).ip},{hostname(ep_name)}")
            elif isinstance(ep, (NetnsSpec, TapSpec)):
                lines.append(f"dhcp-host={mac},{hostname(ep_name)}")
        for vm_name, vm in topo.vms.items():
            for i, nic in enumerate(vm.nics):
                if nic.network != net_name:
                    continue
                mac = qemuargs.nic_mac(topo, vm_name, i)
                name = nic_hostname(vm_name, i)
                lines.append(f"dhcp-host={mac},{nic.address},{name}" if nic.address else f"dhcp-host={mac},{name}")
        for h in net.dhcp.hosts:
            lines.append(f"dhcp-host={h.mac},{h.address}" + (f",{hostname(h.name)}" if h.name else ""))
    return "\n".join(lines) + "\n"
