"""`vnet export --format networkd|sh FILE`: the topology for users who want their distribution to
own bridges and taps.

- networkd: .netdev/.network files for systemd-networkd, one per bridge, tap, tun and uplink. What
  networkd cannot make — network namespaces (netns and macvlan endpoints), QEMU guests, port
  forwards — is refused, naming the entry; vnet's per-port guards are listed as comments (they
  live in vnet's nft table, which networkd does not write).
- sh: a shell script of `ip`, `sysctl` and `nft` commands made from vnet's own desired state, so
  it holds exactly what `vnet apply` would make; resources it cannot say in a line of shell (a
  supervised daemon, a QEMU guest) are comments naming them.

Both are pure: topology (and host facts) in, text out.
"""

from __future__ import annotations

import shlex

from vnet import names
from vnet.desired import desired
from vnet.errors import VnetError
from vnet.facts import HostFacts, bridge_name, guest_mac
from vnet.kinds.address import ADDRESS_KINDS
from vnet.resources import Resource
from vnet.spec.models import MacvlanSpec, NetnsSpec, TapSpec, Topology, TunSpec
from vnet.spec.validate import addressing, dhcp_range

FORMATS = ("networkd", "sh")


class NotExpressible(VnetError):
    """The topology holds something the chosen format cannot say."""


def export(topo: Topology, fmt: str, facts: HostFacts = HostFacts()) -> dict[str, str] | str:
    if fmt == "networkd":
        return networkd(topo)
    if fmt == "sh":
        return shell(topo, facts)
    raise VnetError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


# --- systemd-networkd --------------------------------------------------------------------------


def _ini(*sections: tuple[str, list[tuple[str, object]]], head: list[str] = ()) -> str:
    lines = list(head)
    for name, items in sections:
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        lines += [f"{k}={v}" for k, v in items if v is not None and v != ""]
    return "\n".join(lines) + "\n"


def networkd(topo: Topology) -> dict[str, str]:
    """File name → text, for /etc/systemd/network/. Refuses what networkd cannot express."""
    refused = []
    for ep_name, ep in topo.endpoints.items():
        if isinstance(ep, (NetnsSpec, MacvlanSpec)):
            refused.append(f"endpoints.{ep_name}: a {ep.kind} endpoint lives in a network namespace, which systemd-networkd "
                           "cannot create")
    for vm_name in topo.vms:
        refused.append(f"vms.{vm_name}: networkd does not run QEMU guests")
    for net_name, net in topo.networks.items():
        if net.forwards:
            refused.append(f"networks.{net_name}.forwards: networkd has no port forwards (they are rules in vnet's nft table)")
    if refused:
        raise NotExpressible("cannot export to networkd — " + "; ".join(refused)
                             + " — remove these, or use `vnet export --format sh`, or keep the topology under `vnet apply`")
    head = [f"# {names.link_mark(topo.name, 'networkd', 'export')} — written by `vnet export --format networkd`"]
    files: dict[str, str] = {}
    prio = 60
    for net_name, net in topo.networks.items():
        br = bridge_name(topo, net_name)
        mac = None if net.mode == "bridged" else names.local_mac(topo.name, net_name, "bridge")
        files[f"{prio}-{br}.netdev"] = _ini(("NetDev", [("Name", br), ("Kind", "bridge"), ("MACAddress", mac), ("MTUBytes", net.mtu)]), head=head)
        addr = addressing(topo, net_name)
        network: list[tuple[str, object]] = [("ConfigureWithoutCarrier", "yes")]
        sections: list[tuple[str, list[tuple[str, object]]]] = [("Match", [("Name", br)])]
        if addr.gateway is not None and addr.subnet is not None:
            network.append(("Address", f"{addr.gateway}/{addr.subnet.prefixlen}"))
        if net.mode == "nat":
            network.append(("IPMasquerade", "ipv4"))
        if net.mode == "isolated":
            network.append(("LinkLocalAddressing", "no"))
        if net.mode == "bridged":
            network.append(("DHCP", "yes"))  # the uplink's addressing moves to the bridge
        if net.dhcp is not None and addr.subnet is not None and addr.gateway is not None:
            first, last = dhcp_range(topo, net_name)
            network.append(("DHCPServer", "yes"))
            server = [("PoolOffset", int(first) - int(addr.subnet.network_address)), ("PoolSize", int(last) - int(first) + 1),
                      ("EmitRouter", "yes"), ("EmitDNS", "yes" if net.dns else "no"), ("DNS", addr.gateway if net.dns else None)]
            sections.append(("Network", network))
            sections.append(("DHCPServer", server))
        else:
            sections.append(("Network", network))
        files[f"{prio}-{br}.network"] = _ini(*sections, head=head)
        if net.mode == "bridged" and net.uplink:
            files[f"{prio - 1}-{net.uplink}.network"] = _ini(("Match", [("Name", net.uplink)]), ("Network", [("Bridge", br)]),
                                                           head=head + ["# the NIC joins the bridge; its old .network must go"])
    for ep_name, ep in topo.endpoints.items():
        assert isinstance(ep, (TapSpec, TunSpec))
        ifname = names.endpoint_tap(topo.name, ep_name, ep.ifname)
        owner = [("User", ep.owner), ("Group", ep.group)]
        mac = names.tap_mac(guest_mac(topo, ep_name)) if isinstance(ep, TapSpec) else None
        files[f"{prio + 10}-{ifname}.netdev"] = _ini(("NetDev", [("Name", ifname), ("Kind", ep.kind), ("MACAddress", mac)]),
                                                    (ep.kind.capitalize(), owner), head=head)
        network = [("ConfigureWithoutCarrier", "yes")]
        extra: list[str] = []
        if isinstance(ep, TapSpec) and ep.network:
            network.append(("Bridge", bridge_name(topo, ep.network)))
            guards = [g for g in (f"spoofing: {ep.spoofing}" if ep.spoofing == "deny" else "", "isolated" if ep.isolated else "",
                                  f"rate: {ep.rate}" if ep.rate else "") if g]
            if guards:
                extra.append(f"# not expressed: vnet's port guards ({', '.join(guards)}) live in vnet's nft table")
        if isinstance(ep, TunSpec) and ep.address:
            network.append(("Address", ep.address))
        sections = [("Match", [("Name", ifname)]), ("Network", network)]
        if isinstance(ep, TapSpec) and ep.isolated:
            sections.append(("Bridge", [("Isolated", "yes")]))
        files[f"{prio + 10}-{ifname}.network"] = _ini(*sections, head=head + extra)
    return files


# --- a shell script ----------------------------------------------------------------------------


def _q(*words: object) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def _ip(ns: str, *words: object) -> str:
    return _q("ip", *(("-n", ns) if ns else ()), *words)


def _line(r: Resource) -> list[str]:
    k = r.kind
    if k == "netns":
        return [_q("ip", "netns", "add", r.key), _ip(r.key, "link", "set", "lo", "up")]
    if k == "bridge":
        out = [_ip("", "link", "add", r.key, "type", "bridge")]
        if r.get("mac"):
            out.append(_ip("", "link", "set", r.key, "address", r.get("mac")))
        if r.get("mtu"):
            out.append(_ip("", "link", "set", r.key, "mtu", r.get("mtu")))
        return out + [_ip("", "link", "set", r.key, "up")]
    if k == "tap":
        cmd = ["tuntap", "add", "dev", r.key, "mode", r.get("mode")]
        if r.get("owner") is not None:
            cmd += ["user", r.get("owner")]
        if r.get("group") is not None:
            cmd += ["group", r.get("group")]
        out = [_ip("", *cmd)]
        if r.get("mac"):
            out.append(_ip("", "link", "set", r.key, "address", r.get("mac")))
        if r.get("master"):
            out.append(_ip("", "link", "set", r.key, "master", r.get("master")))
        return out + [_ip("", "link", "set", r.key, "up")]
    if k == "veth":
        peer = ["peer", "name", r.get("peer_name"), "netns", r.get("peer_ns")]
        if r.get("peer_mac"):
            peer += ["address", r.get("peer_mac")]
        out = [_ip("", "link", "add", r.key, *(("address", r.get("mac")) if r.get("mac") else ()), "type", "veth", *peer)]
        if r.get("master"):
            out.append(_ip("", "link", "set", r.key, "master", r.get("master")))
        return out + [_ip("", "link", "set", r.key, "up"), _ip(r.get("peer_ns"), "link", "set", r.get("peer_name"), "up")]
    if k == "macvlan":
        tmp = names.ifname("vmv", r.key)  # a name free in the host, renamed inside the namespace
        return [_ip("", "link", "add", "link", r.get("uplink"), "name", tmp, "address", r.get("mac"), "type", "macvlan", "mode", r.get("mode")),
                _ip("", "link", "set", tmp, "netns", r.get("ns")),
                _ip(r.get("ns"), "link", "set", tmp, "name", r.get("ifname")),
                _ip(r.get("ns"), "link", "set", r.get("ifname"), "up")]
    if k in ADDRESS_KINDS:
        return [_ip(r.get("ns"), "addr", "add", f"{r.get('address')}/{r.get('prefixlen')}", "dev", r.get("ifname"))]
    if k == "route":
        return [_ip(r.get("ns"), "route", "add", r.get("dst"), *(("via", r.get("gateway")) if r.get("gateway") else ()), "dev", r.get("ifname"))]
    if k == "uplink":
        return [f"# bridged: move {r.key}'s addresses and routes to {r.get('bridge')} first (vnet does it with a check and a revert)",
                _ip("", "link", "set", r.key, "master", r.get("bridge"))]
    if k in ("sysctl", "ifsysctl"):
        inside = ("ip", "netns", "exec", r.get("ns")) if r.get("ns") else ()
        return [_q(*inside, "sysctl", "-qw", f"{r.get('path').replace('/', '.')}={r.get('value')}")]
    if k == "qdisc":
        return [_q("tc", "qdisc", "replace", "dev", r.key, "root", "handle", "1:", "tbf", "rate", f"{r.get('rate')}bit",
                   "burst", "32kb", "latency", "50ms")]
    if k == "ruleset" and r.get("text"):
        return ["nft -f - <<'VNET_NFT'", r.get("text").rstrip("\n"), "VNET_NFT"]
    return [f"# not expressed: {r.describe().splitlines()[0]} — a program vnet supervises; run `vnet apply` for it"]


def shell(topo: Topology, facts: HostFacts = HostFacts()) -> str:
    from vnet.kinds import rank

    lines = ["#!/bin/sh",
             f"# {names.link_mark(topo.name, 'sh', 'export')} — written by `vnet export --format sh`: what `vnet apply` would make,",
             "# as commands; nothing here undoes itself or is recorded (vnet destroy will not know it)",
             "set -eu"]
    for r in sorted(desired(topo, facts), key=lambda r: (rank(r.kind), r.key)):
        lines += _line(r)
    return "\n".join(lines) + "\n"
