"""The nftables ruleset of one topology, rendered as text for `nft -f`. Pure.

All of a topology's rules live in two tables that vnet owns whole, `inet vnet-<topology>` (routing,
NAT, forwards, isolation between networks) and `bridge vnet-<topology>` (anti-spoofing, port
isolation, upload limits). Apply replaces both in a single transaction, destroy deletes them,
nothing else on the host is touched, and base chains use policy accept, so vnet never decides
for traffic that is not its own.

Everything that grows with the topology — bridges, uplinks, port forwards, allowed pairs, ports —
is an element of a set or map, so the rules a packet walks are a fixed list: adding the ten
thousandth forward adds a map element, not a rule.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vnet import names
from vnet.facts import HostFacts, bridge_name, ports, uplink_of
from vnet.spec.models import port_span, rate_bits
from vnet.spec.validate import addressing, forward_target

if TYPE_CHECKING:
    from vnet.spec.models import Topology


def _q(name: str) -> str:
    # names were validated to [A-Za-z0-9_.-]; json quoting is the belt to those braces
    return json.dumps(name)


@dataclass
class _Set:
    name: str
    type: str
    elements: list[str] = field(default_factory=list)
    flags: str = ""
    counter: bool = False
    map_type: str = ""  # "a : b" makes it a map

    def render(self) -> list[str]:
        kind = "map" if self.map_type else "set"
        body = [f"type {self.map_type or self.type}"]
        if self.flags:
            body.append(f"flags {self.flags}")
        if self.counter:
            body.append("counter")
        if self.elements:
            body.append("elements = { " + ", ".join(self.elements) + " }")
        return [f"  {kind} {self.name} {{", *(f"    {b}" for b in body), "  }"]


def upload_burst(bits: int) -> int:
    """Policer burst in bytes: 50 ms of traffic, at least 64 KiB, so TCP is not starved."""
    return max(65536, bits // 8 // 20)


@dataclass(frozen=True)
class Rendered:
    """A topology's ruleset. `digest` covers its structure (tables, sets, rules) and is the inet
    table's comment; `elements` covers the set and map elements and is the one element of the set
    `generation`; `rules` counts the rules (a hand-made flush changes it). Observing compares all
    three without listing a single forward."""

    text: str
    digest: str
    elements: str
    rules: int


def render(topo: Topology, facts: HostFacts, port_list: list | None = None) -> Rendered | None:
    """The ruleset of a topology, or None when it needs no rules. `port_list` is desired.ports(topo)
    where the caller has it already."""
    bridges = _Set("bridges", "ifname")
    isolated_bridges = _Set("isolated_bridges", "ifname")
    intra = _Set("intra", "ifname . ifname")
    egress = _Set("egress", "ifname . ifname")
    masq = _Set("masq", "ipv4_addr . ifname", flags="interval")
    hairpin = _Set("hairpin", "ipv4_addr . ifname", flags="interval")
    forwards = _Set("forwards", "", counter=True, map_type="inet_proto . inet_service : ipv4_addr . inet_service")
    allowed_any = _Set("allowed_any", "ifname . ifname")
    allowed = _Set("allowed", "inet_proto . ifname . ifname . inet_service", flags="interval")

    for net_name, net in topo.networks.items():
        if net.mode == "bridged":
            continue
        br = _q(bridge_name(topo, net_name))
        bridges.elements.append(br)
        # with br_netfilter loaded (Docker loads it), frames switched inside a bridge pass the
        # inet forward hook with the bridge as both in and out device: they must stay untouched
        intra.elements.append(f"{br} . {br}")
        if net.mode == "isolated":
            isolated_bridges.elements.append(br)
        if net.mode == "nat":
            up = _q(uplink_of(topo, net_name, facts) or "")
            egress.elements.append(f"{br} . {up}")
            subnet = addressing(topo, net_name).subnet
            masq.elements.append(f"{subnet} . {up}")
            hairpin.elements.append(f"{subnet} . {br}")
            for fwd in net.forwards:
                address, to_port = forward_target(topo, net_name, fwd.to)
                lo, hi = port_span(fwd.port)
                for port in range(lo, hi + 1):
                    forwards.elements.append(f"{fwd.proto} . {port} : {address} . {to_port or port}")
    for rule in topo.allow:
        a, b = _q(bridge_name(topo, rule.from_)), _q(bridge_name(topo, rule.to))
        if rule.ports:
            for p in rule.ports:
                lo, hi = port_span(p)
                allowed.elements.append(f"{rule.proto} . {a} . {b} . {lo}" + (f"-{hi}" if hi != lo else ""))
        elif rule.proto:
            allowed.elements.append(f"{rule.proto} . {a} . {b} . 0-65535")
        else:
            allowed_any.elements.append(f"{a} . {b}")

    inet_sets = [bridges, isolated_bridges, intra, egress, masq, hairpin, forwards, allowed_any, allowed]
    forward = [
        # the packets of flows a rule below let through, first: one conntrack test instead of a
        # walk through the set lookups (measured: +14% throughput, +50% connections/s through a
        # forwarded port in one bench run, +9% in another); what is established here was accepted
        # as new by the rules below (or by the policy, off vnet's bridges)
        "ct state established,related accept",
        "iifname . oifname @intra accept",
        # an isolated network reaches nothing, not even forward targets through the host's address
        "iifname @isolated_bridges drop",
        "oifname @isolated_bridges drop",
        "iifname . oifname @egress accept",
        "oifname @bridges ct status dnat accept",  # port forwards
        "meta l4proto . iifname . oifname . th dport @allowed accept",
        "iifname . oifname @allowed_any accept",
        # everything else in or out of a vnet bridge is not forwarded: networks are isolated
        "iifname @bridges drop",
        "oifname @bridges drop",
    ]
    # no address of the host's may answer on an isolated bridge, whatever a guest configures
    input_ = ["iifname @isolated_bridges drop"]
    dnat = "dnat ip to meta l4proto . th dport map @forwards"
    prerouting = [f"fib daddr type local {dnat}"]
    output = [f"ip daddr != 127.0.0.0/8 fib daddr type local {dnat}"]  # forwards reached from the host itself
    postrouting = [
        "ip saddr . oifname @masq masquerade",
        # hairpin: an endpoint reaching a forward on the host's address must get the reply through
        # the host, so the target sees the gateway (postrouting knows no input device: match the source)
        "ct status dnat ip saddr . oifname @hairpin masquerade",
    ]

    guarded = _Set("guarded", "ifname")
    port_mac = _Set("port_mac", "ifname . ether_addr")
    ip_guarded = _Set("ip_guarded", "ifname")
    port_ip = _Set("port_ip", "ifname . ipv4_addr")
    isolated_ports = _Set("isolated_ports", "ifname")
    upload = _Set("upload_limits", "", map_type="ifname : limit")
    limits: list[str] = []
    for i, port in enumerate(ports(topo) if port_list is None else port_list):
        name = _q(port.ifname)
        if port.spoofing == "deny":
            guarded.elements.append(name)
            port_mac.elements.append(f"{name} . {port.mac}")
            if port.address:
                ip_guarded.elements.append(name)
                port_ip.elements.append(f"{name} . {port.address}")
        if port.isolated:
            isolated_ports.elements.append(name)
        if port.rate:
            bits = rate_bits(port.rate)
            # in bytes: nft's kbytes are 1024 bytes, and would round small rates down to zero
            limits.append(f"  limit up{i} {{ rate over {bits // 8} bytes/second burst {upload_burst(bits)} bytes }}")
            upload.elements.append(f"{name} : \"up{i}\"")
    service_ports = _Set("service_ports", "ifname")
    for net_name, net in topo.networks.items():
        if net.mode == "isolated" and (net.dhcp or net.dns):
            service_ports.elements.append(_q(names.veth_host(topo.name, f"svc-{net_name}")))
    bridge_sets = [guarded, port_mac, ip_guarded, port_ip, isolated_ports, service_ports, upload]
    bridge_pre = [
        "iifname @guarded iifname . ether saddr != @port_mac drop",
        "iifname @guarded udp sport 67 drop",  # no rogue DHCP server on an endpoint
        "iifname @ip_guarded ip saddr != 0.0.0.0 iifname . ip saddr != @port_ip drop",
        "iifname @ip_guarded arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @port_ip drop",
        "limit name iifname map @upload_limits drop",
    ]
    # an isolated port still reaches its network's DHCP/DNS service, which is a port too
    bridge_fwd = [
        "iifname @isolated_ports oifname != @service_ports drop",
        "oifname @isolated_ports iifname != @service_ports drop",
    ]

    if not bridges.elements and not guarded.elements and not isolated_ports.elements and not upload.elements:
        return None

    inet_body: list[str] = []
    for s in inet_sets:
        inet_body += s.render()

    def chain(body: list[str], name: str, hook: str, prio: str, rules: list[str], kind: str = "filter") -> None:
        body.append(f"  chain {name} {{")
        body.append(f"    type {kind} hook {hook} priority {prio}; policy accept;")
        body.extend(f"    {r}" for r in rules)
        body.append("  }")

    chain(inet_body, "forward", "forward", "filter", forward)
    chain(inet_body, "input", "input", "filter", input_)
    chain(inet_body, "prerouting", "prerouting", "dstnat", prerouting, kind="nat")
    chain(inet_body, "output", "output", "-100", output, kind="nat")  # dstnat, by number: nft 1.0.6 refuses the name on output
    chain(inet_body, "postrouting", "postrouting", "srcnat", postrouting, kind="nat")
    bridge_body = list(limits)
    for s in bridge_sets:
        bridge_body += s.render()
    chain(bridge_body, "prerouting", "prerouting", "filter", bridge_pre)
    chain(bridge_body, "forward", "forward", "filter", bridge_fwd)

    table = names.nft_table(topo.name)
    elements = element_digest(inet_body + bridge_body)
    inet_body = _Set("generation", "mark", [f"0x{elements}"]).render() + inet_body
    skeleton = [line for line in inet_body + bridge_body if not _is_elements(line)]
    digest = hashlib.sha256("\n".join(skeleton).encode()).hexdigest()[:16]
    text = (
        f'table inet {table} {{\n  comment "{names.digest_mark(topo.name, digest)}"\n' + "\n".join(inet_body) + "\n}\n"
        f"table bridge {table} {{\n" + "\n".join(bridge_body) + "\n}\n"
    )
    return Rendered(text, digest, elements, rule_count(skeleton))


def _is_elements(line: str) -> bool:
    return line.lstrip().startswith("elements = {")


def element_digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(x for x in lines if _is_elements(x)).encode()).hexdigest()[:8]


def parse(text: str) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    """(structure lines, {(family, set): elements}) of text that `render` wrote."""
    skeleton: list[str] = []
    sets: dict[tuple[str, str], list[str]] = {}
    family = current = ""
    for line in text.splitlines():
        words = line.split()
        if line.startswith("table "):
            family = words[1]
        elif line.startswith(("  set ", "  map ")):
            current = words[1]
            sets[(family, current)] = []
        if _is_elements(line):
            inner = line.strip()[len("elements = {") : -1].strip()
            sets[(family, current)] = [e.strip() for e in inner.split(", ") if e.strip()]
        elif not line.lstrip().startswith("comment "):
            skeleton.append(line)
    return skeleton, sets


def rule_count(skeleton: list[str]) -> int:
    """Rules in the chains of `parse`d text (what observe counts on the host)."""
    count, in_chain = 0, False
    for line in skeleton:
        stripped = line.strip()
        if stripped.startswith("chain "):
            in_chain = True
        elif stripped == "}":
            in_chain = False
        elif in_chain and stripped and not stripped.startswith("type "):
            count += 1
    return count


def delta(table: str, old_text: str, new_text: str) -> str | None:
    """An nft script that turns `old_text`'s elements into `new_text`'s, or None when their
    structure differs (then the tables are replaced whole). Deletes come first, so a map key that
    now points elsewhere is removed before it is added again."""
    old_skel, old_sets = parse(old_text)
    new_skel, new_sets = parse(new_text)
    if old_skel != new_skel:
        return None
    deletes, adds = [], []
    for key in new_sets:
        family, name = key
        before, after = old_sets.get(key, []), new_sets[key]
        before_set, after_set = set(before), set(after)
        gone = [e for e in before if e not in after_set]
        came = [e for e in after if e not in before_set]
        if gone:
            deletes.append(f"delete element {family} {table} {name} {{ {', '.join(gone)} }}")
        if came:
            adds.append(f"add element {family} {table} {name} {{ {', '.join(came)} }}")
    return "\n".join(deletes + adds) + "\n"
