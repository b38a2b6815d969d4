"""FRR's configuration for `overlay: {control: evpn}`: iBGP between the hosts of `hosts:` (full
mesh, or with `evpn: {route_reflectors: [...]}` each host peers with the reflectors only), address family l2vpn evpn with `advertise-all-vni`. zebra reads the kernel's vxlan devices
and bridges, and puts what bgpd learns into their FDB (remote MACs from type-2 routes, flood lists
from type-3 routes). Pure: no I/O.

vnet runs its own zebra and bgpd per target namespace and topology (kinds/frr.py), with a
pathspace (-N) of their own and every file under the topology's state directory:

    frr.conf        the whole rendered config, as `vtysh` would show it
    frr-zebra.conf  zebra's part of it (vnet's marker for zebra)
    frr-bgpd.conf   bgpd's part of it (vnet's marker for bgpd)
    frr/            pid files, zserv socket, vty sockets (`vtysh --vty_socket <dir>`), log
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from vnet import overlay
from vnet.facts import HostFacts
from vnet.names import sha256
from vnet.spec.models import Topology

DEFAULT_ASN = 65000
SUN_PATH_MAX = 107  # bytes of a unix socket path, without the trailing NUL


def wanted(topo: Topology, facts: HostFacts) -> bool:
    """Whether this host runs FRR: it is one of `hosts:` and a network is `control: evpn`."""
    return facts.host is not None and any(net.overlay is not None and net.overlay.control == "evpn" for net in topo.networks.values())


def asn(topo: Topology) -> int:
    return topo.evpn.asn if topo.evpn is not None else DEFAULT_ASN


def router_id(underlay: str) -> str:
    """The underlay address where it is IPv4; for an IPv6 underlay, four bytes derived from it."""
    ip = ipaddress.ip_address(underlay)
    if ip.version == 4:
        return str(ip)
    return str(ipaddress.IPv4Address(sha256(ip.packed).digest()[:4]))


def pathspace(state: Path) -> str:
    """FRR's -N: unique per state directory (which is per target namespace and topology)."""
    return "vnet-" + sha256(str(state).encode()).hexdigest()[:12]


def files(state: Path) -> dict[str, Path]:
    run = state / "frr"
    return {
        "conf": state / "frr.conf",
        "zconf": state / "frr-zebra.conf",
        "bconf": state / "frr-bgpd.conf",
        "run": run,
        "zebra_pid": run / "zebra.pid",
        "bgpd_pid": run / "bgpd.pid",
        "zserv": run / "zserv.api",
        "log": run / "frr.log",
    }


ZEBRA_SECTION, BGPD_SECTION = "! --- zebra", "! --- bgpd"


def part(config: str, daemon: str) -> str:
    """What one daemon reads of the rendered config: the common head and its own section (each
    daemon logs every line of the other's as an error)."""
    head, _, rest = config.partition(ZEBRA_SECTION + "\n")
    zebra, _, bgpd = rest.partition(BGPD_SECTION + "\n")
    return head + (zebra if daemon == "zebra" else bgpd)


def render(topo: Topology, facts: HostFacts) -> str:
    assert facts.host is not None and facts.underlay is not None
    whole = facts.whole or topo
    f = files(facts.state)
    vnis = ", ".join(f"{n}={net.overlay.vni}" for n, net in topo.networks.items() if net.overlay is not None and net.overlay.control == "evpn")
    sessions = overlay.bgp_peers(whole, facts)
    peers = [p for p, _ in sessions]
    lines = [
        f"! vnet: FRR of topology {topo.name} on host {facts.host} (EVPN for {vnis}); written by vnet, edits are overwritten",
        "frr defaults datacenter",
        f"hostname {topo.name}-{facts.host}",
        f"log file {f['log']}",
        ZEBRA_SECTION,
        # the peers are reached through the underlay's default route (a routed underlay)
        "ip nht resolve-via-default",
        "ipv6 nht resolve-via-default",
        BGPD_SECTION,
        f"router bgp {asn(topo)}",
        f" bgp router-id {router_id(facts.underlay)}",
        " no bgp default ipv4-unicast",
    ]
    for p in peers:
        lines += [f" neighbor {p} remote-as {asn(topo)}", f" neighbor {p} update-source {facts.underlay}", f" neighbor {p} timers connect 5"]
    lines += [" !", " address-family l2vpn evpn"]
    for p, client in sessions:
        lines.append(f"  neighbor {p} activate")
        if client:
            lines.append(f"  neighbor {p} route-reflector-client")
    lines += ["  advertise-all-vni", " exit-address-family", "exit", "!"]
    return "\n".join(lines) + "\n"


def too_long(state: Path) -> str | None:
    """The first of FRR's socket paths under `state` that a unix socket cannot take, if any."""
    f = files(state)
    for path in (f["zserv"], f["run"] / "zebra.vty", f["run"] / "bgpd.vty"):
        if len(str(path).encode()) > SUN_PATH_MAX:
            return str(path)
    return None
