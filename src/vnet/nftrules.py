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

import ipaddress
import json
import _socket  # not socket.py: ~3 ms of start-up (drivers/rtnl.py)
from typing import TYPE_CHECKING

from vnet import names, qemuargs
from vnet.facts import HostFacts, Port, bridge_name, offloading, ports, uplink_of
from vnet.values import Frozen, _set, per_topology
from vnet.spec.models import TapSpec, duration_seconds, port_span, rate_bits
from vnet.spec.validate import addressing, addressing6, dhcp6_range, forward_target, known_address6, wants_service

if TYPE_CHECKING:
    from vnet.spec.models import Topology


def _q(name: str) -> str:
    # names were validated to [A-Za-z0-9_.-]; json quoting is the belt to those braces
    return json.dumps(name)


class _Set:
    """A set (or map) of the rendered tables, with its elements."""

    __slots__ = ("name", "type", "elements", "flags", "counter", "map_type", "typeof")
    name: str
    type: str
    elements: list[str]
    flags: str
    counter: bool
    map_type: str  # "a : b" makes it a map
    typeof: str  # keys described by expressions (raw payloads) instead of `type`

    def __init__(self, name: str, type: str, elements: list[str] | None = None, flags: str = "", counter: bool = False,
                 map_type: str = "", typeof: str = "") -> None:
        self.name = name
        self.type = type
        self.elements = [] if elements is None else elements
        self.flags = flags
        self.counter = counter
        self.map_type = map_type
        self.typeof = typeof

    def __repr__(self) -> str:
        return f"_Set(name={self.name!r}, type={self.type!r}, elements={self.elements!r}, flags={self.flags!r})"

    def render(self) -> list[str]:
        kind = "map" if self.map_type else "set"
        body = [f"typeof {self.typeof}" if self.typeof else f"type {self.map_type or self.type}"]
        if self.flags:
            body.append(f"flags {self.flags}")
        if self.counter:
            body.append("counter")
        if self.elements:
            body.append("elements = { " + ", ".join(self.elements) + " }")
        return [f"  {kind} {self.name} {{", *(f"    {b}" for b in body), "  }"]


GUARD_DROPS = "guard_drops"  # the bridge table's set of ports whose frames a guard dropped, each with a counter
COUNT_GUARD_DROP = f"update @{GUARD_DROPS} {{ iifname }}"


def upload_burst(bits: int) -> int:
    """Policer burst in bytes: 50 ms of traffic, at least 64 KiB, so TCP is not starved. The kernel
    sizes a byte limit's bucket as one second of the rate plus this burst (nft_limit's tokens_max),
    so after an idle second a port may send that much at once; the average holds."""
    return max(65536, bits // 8 // 20)


class Rendered(Frozen):
    """A topology's ruleset. `digest` covers its structure (tables, sets, rules) and is the inet
    table's comment; `elements` covers the set and map elements and is the one element of the set
    `generation`; `rules` counts the rules (a hand-made flush changes it). Observing compares all
    three without listing a single forward."""

    __slots__ = ("text", "digest", "elements", "rules")
    text: str
    digest: str
    elements: str
    rules: int

    def __init__(self, text: str, digest: str, elements: str, rules: int) -> None:
        _set(self, "text", text)
        _set(self, "digest", digest)
        _set(self, "elements", elements)
        _set(self, "rules", rules)


def render(topo: Topology, facts: HostFacts, port_list: list | None = None) -> Rendered | None:
    """The ruleset of a topology, or None when it needs no rules. `port_list` is desired.ports(topo)
    where the caller has it already."""
    port_list = ports(topo) if port_list is None else port_list
    inet_sets, forward, input_, prerouting, output, postrouting = _routing(topo, facts, port_list)
    offload_sets, flowtable, offload_forward = _offload(topo, facts)
    inet_sets, forward = inet_sets + offload_sets, offload_forward + forward
    ov = overlay_rules(topo, facts)  # nothing without overlay networks
    # an overlay network's DHCP/DNS namespace serves isolated ports too
    guards = _guards(topo, port_list, ov.service_ports)
    limits, bridge_sets, bridge_pre, bridge_fwd = guards.limits, guards.sets, guards.prerouting, guards.forward
    inet_sets, input_ = inet_sets + ov.inet_sets, input_ + ov.input
    bridge_sets, bridge_pre = bridge_sets + ov.bridge_sets, ov.bridge_pre + bridge_pre
    if not inet_sets[0].elements and not guards.needed:  # inet_sets[0] is the set of vnet's bridges
        return None

    inet_body: list[str] = []
    for s in inet_sets:
        inet_body += s.render()
    inet_body += flowtable

    def chain(body: list[str], name: str, hook: str | None, prio: str, rules: list[str], kind: str = "filter") -> None:
        body.append(f"  chain {name} {{")
        if hook is not None:  # a base chain; without a hook, a regular chain reached by jump or goto
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
    # a bridge base chain only where it has rules: a frame pays for each hook's chain even when it
    # walks no rule there. Measured with perf through a forward (bench topology, 10 forwards): the
    # bridge table's share of the kernel's nftables time per connection went from ~1.2 µs to
    # about nothing once the output chain (every frame from the host to a port passed its one
    # DHCP rule) was left out where no port leases, and the fast path below took the replies
    for hook, rules in (("prerouting", bridge_pre), ("forward", bridge_fwd), ("output", ov.bridge_out + guards.output)):
        if rules:
            chain(bridge_body, hook, hook, "filter", rules)
    for name, rules in guards.chains:
        chain(bridge_body, name, None, "", rules)

    table = names.nft_table(topo.name)
    elements = element_digest(inet_body + bridge_body)
    inet_body = _Set("generation", "mark", [f"0x{elements}"]).render() + inet_body
    skeleton = [line for line in inet_body + bridge_body if not _is_elements(line)]
    digest = names.sha256("\n".join(skeleton).encode()).hexdigest()[:16]
    text = (
        f'table inet {table} {{\n  comment "{names.digest_mark(topo.name, digest)}"\n' + "\n".join(inet_body) + "\n}\n"
        f"table bridge {table} {{\n" + "\n".join(bridge_body) + "\n}\n"
    )
    return Rendered(text, digest, elements, rule_count(skeleton))


def _routing(topo: Topology, facts: HostFacts, port_list: list[Port]):
    """The inet table: its sets, and the rules of its forward, input, prerouting, output and
    postrouting chains (routing, NAT, forwards, isolation between networks)."""
    bridges = _Set("bridges", "ifname")
    isolated_bridges = _Set("isolated_bridges", "ifname")
    intra = _Set("intra", "ifname . ifname")
    egress = _Set("egress", "ifname . ifname")
    masq = _Set("masq", "ipv4_addr . ifname", flags="interval")
    hairpin = _Set("hairpin", "ipv4_addr . ifname", flags="interval")
    # IPv6: the same shape, one more set per address family (a set holds one address type);
    # bridges, egress, isolation and allow: are per interface and serve both families
    masq6 = _Set("masq6", "ipv6_addr . ifname", flags="interval")
    hairpin6 = _Set("hairpin6", "ipv6_addr . ifname", flags="interval")
    sets = [bridges, isolated_bridges, intra, egress, masq, hairpin, masq6, hairpin6]
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
            subnet6 = addressing6(topo, net_name).subnet
            if subnet6 is not None:
                if net.nat6 is not False:  # NAT66, unless nat6: false routes the prefix
                    masq6.elements.append(f"{subnet6} . {up}")
                hairpin6.elements.append(f"{subnet6} . {br}")
    fwd_sets, from_uplink, fwd_forward, prerouting, output = _forwards(topo, facts)
    iso_sets, iso_forward = _isolation(topo, port_list)
    sets += fwd_sets + iso_sets
    uplinks = fwd_sets[0]
    # A forward's new connection comes in on an uplink and goes out to a nat network's bridge. Where
    # no port is isolated and no uplink is an isolated network's bridge, none of the rules up to
    # the forwards' can drop it, so it is tested right after the established flows: the first
    # packet of every forwarded connection skips six rules (connections/s through a forward +1.5–2%
    # in one bench sitting, interleaved). Otherwise an isolated port, which may sit on a bridged
    # network whose bridge is the uplink, is dropped first, as it always was.
    early = not any(port.isolated for port in port_list) and not set(uplinks.elements) & set(isolated_bridges.elements)
    forward = [
        # the packets of flows a rule below let through, first: one conntrack test instead of a
        # walk through the set lookups (measured: +14% throughput, +50% connections/s through a
        # forwarded port in one bench run, +9% in another); a flow open when a network becomes
        # isolated lives on until it closes (vnet does not flush conntrack)
        "ct state established,related accept",
        *(from_uplink if early else []),
        *iso_forward,
        "iifname . oifname @intra accept",
        # an isolated network reaches nothing, not even forward targets through the host's address
        "iifname @isolated_bridges drop",
        "oifname @isolated_bridges drop",
        "iifname . oifname @egress accept",
        *([] if early else from_uplink),
        *fwd_forward,
        # everything else in or out of a vnet bridge is not forwarded: networks are isolated
        "iifname @bridges drop",
        "oifname @bridges drop",
    ]
    # no address of the host's may answer on an isolated bridge, whatever a guest configures
    input_ = ["iifname @isolated_bridges drop"]
    postrouting = [
        "ip saddr . oifname @masq masquerade",
        # hairpin: an endpoint reaching a forward on the host's address must get the reply through
        # the host, so the target sees the gateway's address, not the client's (postrouting knows
        # no input device: match the source)
        "ct status dnat ip saddr . oifname @hairpin masquerade",
        "ip6 saddr . oifname @masq6 masquerade",
        "ct status dnat ip6 saddr . oifname @hairpin6 masquerade",
    ]
    return sets, forward, input_, prerouting, output, postrouting


def _offload(topo: Topology, facts: HostFacts) -> tuple[list[_Set], list[str], list[str]]:
    """Where the kernel has flowtables: the flowtable that takes established TCP and UDP flows of
    nat networks (`offload:` not false) off the forward path, its devices (those networks' bridges
    and uplinks), and the rule that hands it a flow. A flow is offloaded only when both its ends
    are such devices, so a network with `offload: false` keeps every packet on the forward chain
    even where it shares the uplink. Only flows the forward chain accepted become established:
    isolation and `allow:` rules decide as before. Nothing where the kernel has no flowtables."""
    if not facts.flowtables:
        return [], [], []
    devices: list[str] = []
    for net_name in offloading(topo):
        for dev in (bridge_name(topo, net_name), uplink_of(topo, net_name, facts)):
            if dev and _q(dev) not in devices:
                devices.append(_q(dev))
    if not devices:
        return [], [], []
    flowtable = ["  flowtable fastpath {", "    hook ingress priority 0", "    devices = { " + ", ".join(devices) + " }", "  }"]
    return [_Set("flow_devices", "ifname", devices)], flowtable, ["meta l4proto { tcp, udp } iifname @flow_devices oifname @flow_devices flow add @fastpath"]


def _forwards(topo: Topology, facts: HostFacts):
    """Port forwards: one map keyed by the interface a connection comes in on, so a forward is
    published only where it should be — on the uplink's own addresses, to the host itself (its
    output, seen as `lo`), to its own network (the hairpin, on any of the host's addresses), and to
    the networks an `allow:` rule lets in (which the forward chain then filters by that rule).
    Another vnet network finds no key, so its connection is not translated and not forwarded."""
    uplinks = _Set("uplinks", "ifname")
    published = _Set("published", "ifname . ifname")
    forwards = _Set("forwards", "", counter=True, map_type="ifname . inet_proto . inet_service : ipv4_addr . inet_service")
    # a forward whose target has a fixed IPv6 address works over IPv6 too, on the same ports
    forwards6 = _Set("forwards6", "", counter=True, map_type="ifname . inet_proto . inet_service : ipv6_addr . inet_service")
    allowed_any = _Set("allowed_any", "ifname . ifname")
    allowed = _Set("allowed", "inet_proto . ifname . ifname . inet_service", flags="interval")
    let_in: dict[str, list[str]] = {}  # network → bridges of the networks allowed into it
    for rule in topo.allow:
        a, b = _q(bridge_name(topo, rule.from_)), _q(bridge_name(topo, rule.to))
        let_in.setdefault(rule.to, []).append(a)
        if rule.ports:
            for p in rule.ports:
                lo, hi = port_span(p)
                allowed.elements.append(f"{rule.proto} . {a} . {b} . {lo}" + (f"-{hi}" if hi != lo else ""))
        elif rule.proto:
            allowed.elements.append(f"{rule.proto} . {a} . {b} . 0-65535")
        else:
            allowed_any.elements.append(f"{a} . {b}")
    for net_name, net in topo.networks.items():
        if net.mode != "nat" or not net.forwards:
            continue
        br = _q(bridge_name(topo, net_name))
        up = _q(uplink_of(topo, net_name, facts) or "")
        if up not in uplinks.elements:
            uplinks.elements.append(up)
        published.elements.append(f"{up} . {br}")
        ingress = [up, _q("lo"), br, *dict.fromkeys(x for x in let_in.get(net_name, []) if x != br)]
        for fwd in net.forwards:
            address, to_port = forward_target(topo, net_name, fwd.to)
            name = fwd.to.partition(":")[0]
            address6 = None if name[0].isdigit() else known_address6(topo, name, net_name)
            lo, hi = port_span(fwd.port)
            # a key's head and the addresses written once, not once per port and ingress (10,000
            # forwards: 30,000 elements), and each family's elements in one comprehension
            heads = [f"{ifname} . {fwd.proto} . " for ifname in ingress]
            ports = [(port, to_port or port) for port in range(lo, hi + 1)]
            for to, elements in ((address, forwards.elements), (address6, forwards6.elements)):
                if to is not None:
                    text = str(to)
                    elements.extend([f"{head}{port} : {text} . {dest}" for port, dest in ports for head in heads])
    dnat = "dnat ip to {dev} . meta l4proto . th dport map @forwards"
    dnat6 = "dnat ip6 to {dev} . meta l4proto . th dport map @forwards6"
    prerouting = [
        # from outside: only on the uplink's own addresses
        "iifname @uplinks fib daddr . iif type local " + dnat.format(dev="iifname"),
        "iifname @uplinks fib daddr . iif type local " + dnat6.format(dev="iifname"),
        # from vnet's networks: on any of the host's addresses (the map holds only their own
        # network's forwards and those an allow: rule names)
        "iifname @bridges fib daddr type local " + dnat.format(dev="iifname"),
        "iifname @bridges fib daddr type local " + dnat6.format(dev="iifname"),
    ]
    output = [  # from the host itself
        "ip daddr != 127.0.0.0/8 fib daddr type local " + dnat.format(dev="oifname"),
        "ip6 daddr != ::1 fib daddr type local " + dnat6.format(dev="oifname"),
    ]
    from_uplink = ["iifname . oifname @published ct status dnat accept"]
    between = [  # networks an `allow:` rule lets in: after the isolation rules, which may drop it
        "meta l4proto . iifname . oifname . th dport @allowed accept",
        "iifname . oifname @allowed_any accept",
    ]
    return [uplinks, published, forwards, forwards6, allowed_any, allowed], from_uplink, between, prerouting, output


def _isolation(topo: Topology, port_list: list[Port]):
    """An isolated port reaches its gateway, its network's DHCP/DNS and, through the gateway, what
    a port of its network may reach beyond it — never a port of a vnet bridge by way of the host
    (routed through the gateway, or the hairpin of a forward). Ports are known here by their MAC
    and fixed address, which the bridge guards hold to the port (`spoofing: deny`)."""
    isolated_macs = _Set("isolated_macs", "ether_addr")
    isolated_addrs = _Set("isolated_addrs", "ipv4_addr")
    service_addrs = _Set("service_addrs", "ipv4_addr")
    for port in port_list:
        if port.isolated:
            isolated_macs.elements.append(port.mac)
            if port.address:
                isolated_addrs.elements.append(port.address)
    for net_name, net in topo.networks.items():
        svc = addressing(topo, net_name).service if net.mode == "isolated" else None
        if svc is not None:
            service_addrs.elements.append(str(svc))
    forward = [
        "ether saddr @isolated_macs oifname @bridges ip daddr != @service_addrs drop",
        "iifname @bridges oifname @bridges ip daddr @isolated_addrs ip saddr != @service_addrs drop",
    ]
    return [isolated_macs, isolated_addrs, service_addrs], forward


LEASED_KEY = "@ll,48,48 . @nh,96,32"  # (source MAC, source IPv4 address) of a frame
LEASE_GRACE = 60  # seconds the data path lets a fresh lease through before the lease script speaks
ACK = "ether type ip udp sport 67 udp dport 68 @ih,1920,24 0x350105"  # a DHCPACK (option 53 comes first)
LEARN = f"{ACK} add @leased {{ @ih,224,48 . @ih,128,32 timeout {LEASE_GRACE}s }}"


class _Guards:
    """The bridge table's parts: limits, sets, the rules of its chains, and whether it is needed."""

    __slots__ = ("limits", "sets", "prerouting", "forward", "output", "needed", "chains")
    limits: list[str]
    sets: list[_Set]
    prerouting: list[str]
    forward: list[str]
    output: list[str]
    needed: bool
    chains: list[tuple[str, list[str]]]  # (name, rules) of regular chains

    def __init__(self, limits: list[str], sets: list[_Set], prerouting: list[str], forward: list[str], output: list[str],
                 needed: bool, chains: list[tuple[str, list[str]]] | None = None) -> None:
        self.limits = limits
        self.sets = sets
        self.prerouting = prerouting
        self.forward = forward
        self.output = output
        self.needed = needed
        self.chains = [] if chains is None else chains


def eui64(mac: str) -> int:
    """The interface identifier SLAAC and link-local addresses take from a MAC (RFC 4291)."""
    b = bytes.fromhex(mac.replace(":", ""))
    return int.from_bytes(bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:6], "big")


def v6text(a: ipaddress.IPv6Address) -> str:
    """str(a), by the C library where it writes the same (every address but those of ::/80, which
    it may write with a dotted IPv4 tail): ipaddress's own is a tenth of rendering a thousand ports."""
    if int(a) >> 48:
        return _socket.inet_ntop(_socket.AF_INET6, a.packed)
    return str(a)


def link_local(mac: str) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0xFE80 << 112) | eui64(mac))


def port_addresses6(topo: Topology, port: Port) -> list[ipaddress.IPv6Address] | None:
    """What a port may send from and claim in IPv6, where vnet knows it: its link-local address
    (EUI-64 of its MAC) and its fixed `address6:`, or its SLAAC address in its network's /64.
    None where vnet cannot know it (a bridged network's prefix is the LAN's; DHCPv6 leases any
    address of its range): such a port may use any address but a reserved one."""
    spec, net_name = _port_spec(topo, port.ifname)
    fixed = getattr(spec, "address6", None)
    if fixed:
        return [link_local(port.mac), ipaddress.IPv6Interface(str(fixed)).ip]
    net = topo.networks[net_name] if net_name else None
    if net is not None and net.mode != "bridged" and not net.subnet6:
        return [link_local(port.mac)]  # no IPv6 there but the link's own
    if net is None or net.mode == "bridged" or dhcp6_range(topo, net_name) is not None:
        return None
    net6 = ipaddress.IPv6Network(str(net.subnet6))
    if net6.prefixlen != 64:
        return None
    return [link_local(port.mac), net6[eui64(port.mac)]]


def _reserved6(topo: Topology, port_list: list[Port]) -> list[ipaddress.IPv6Address]:
    """IPv6 addresses no port may take unless they are its own: the gateways and services of
    vnet's networks, their bridges' link-local addresses, and every port's known addresses."""
    out: set[ipaddress.IPv6Address] = set()
    for net_name, net in topo.networks.items():
        if net.mode == "bridged":
            continue
        addr6 = addressing6(topo, net_name)
        out.update(a for a in (addr6.gateway, addr6.service) if a is not None)
        out.add(link_local(net.mac or names.local_mac(topo.name, net_name, "bridge")))
    for port in port_list:
        out.add(link_local(port.mac))
        out.update(port_addresses6(topo, port) or ())
    return sorted(out)


@per_topology
def _port_specs(topo: Topology, _: None = None) -> dict[str, tuple[object, str | None]]:
    """Every port's host-side interface → (the endpoint or VM NIC spec, its network), worked out
    once per topology (asked for each port: a search per port made the guards O(ports²))."""
    out: dict[str, tuple[object, str | None]] = {}
    for ep_name, ep in topo.endpoints.items():
        if isinstance(ep, TapSpec):
            name = names.endpoint_tap(topo.name, ep_name, ep.ifname)
        else:
            name = names.veth_host(topo.name, ep_name)
        out.setdefault(name, (ep, getattr(ep, "network", None)))
    for vm_name, vm in topo.vms.items():
        for i, nic in enumerate(vm.nics):
            out.setdefault(qemuargs.nic_tap(topo, vm_name, i), (nic, nic.network))
    return out


def _port_spec(topo: Topology, ifname: str):
    """(the endpoint or VM NIC spec, its network) behind a port's host-side interface."""
    return _port_specs(topo, None).get(ifname, (None, None))


def _guards(topo: Topology, port_list: list[Port], more_service_ports: tuple[str, ...] | list[str] = ()) -> _Guards:
    """The bridge table: what a port may send (MAC, addresses, DHCP/RA/ND roles, no VLAN tags),
    port isolation and upload limits. Every check is a set lookup keyed by the port.
    `more_service_ports`: the overlay's DHCP/DNS ports, service ports as the isolated networks' are."""
    guarded = _Set("guarded", "ifname")
    port_mac = _Set("port_mac", "ifname . ether_addr")
    # a guarded port and its own MAC → the checks of its kind of port (a fixed address, DHCP, free)
    guard_ports = _Set("guard_ports", "", map_type="ifname . ether_addr : verdict")
    ip_guarded = _Set("ip_guarded", "ifname")  # ports with a fixed IPv4 address
    port_ip = _Set("port_ip", "ifname . ipv4_addr")
    # a port with a fixed IPv4 address and no upload rate, its MAC and its address: the fast path
    fixed_ok = _Set("fixed_ok", "ifname . ether_addr . ipv4_addr")
    dhcp_guarded = _Set("dhcp_guarded", "ifname")  # ports that lease their address from vnet's dnsmasq
    free_guarded = _Set("free_guarded", "ifname")  # ports whose address vnet does not know
    reserved = _Set("reserved_ip", "ipv4_addr")  # gateways, DHCP/DNS services, fixed addresses
    # filled by DHCP snooping, never by a ruleset: (MAC, address) of each lease, for as long as the
    # lease runs. The data path adds the pair from vnet's own DHCPACK as it passes (so the client's
    # first packet after it is let through), for a minute; dnsmasq's lease script (vnet.snoop) then
    # sets the lease's own time, renews it, and removes it. Raw payloads, so both can write it.
    leased = _Set("leased", "", typeof=LEASED_KEY, flags="dynamic,timeout")
    ip6_guarded = _Set("ip6_guarded", "ifname")  # ports whose IPv6 addresses vnet knows
    port_ip6 = _Set("port_ip6", "ifname . ipv6_addr")
    fixed6_ok = _Set("fixed6_ok", "ifname . ether_addr . ipv6_addr")  # … and for IPv6, every address vnet knows of it
    nd_target = _Set("nd_target", "", typeof="iifname . @th,64,128")  # a Neighbour Advertisement's target
    free6_guarded = _Set("free6_guarded", "ifname")  # ports whose IPv6 addresses vnet does not know
    reserved6 = _Set("reserved_ip6", "ipv6_addr")
    reserved_nd = _Set("reserved_nd", "", typeof="@th,64,128")  # the same, as a target
    nd_mac = _Set("nd_mac", "", typeof="iifname . @th,208,48")  # … and its target link-layer address
    isolated_ports = _Set("isolated_ports", "ifname")
    service_ports = _Set("service_ports", "ifname")
    upload = _Set("upload_limits", "", map_type="ifname : limit")
    guard_drops = _Set(GUARD_DROPS, "ifname", flags="dynamic", counter=True)

    vnet_dhcp: set[str] = set()
    reserved_ips: set[str] = set()
    for net_name, net in topo.networks.items():
        if net.mode == "bridged":
            continue
        addr = addressing(topo, net_name)
        reserved_ips.update(str(a) for a in (addr.gateway, addr.service) if a is not None)
        if net.dhcp is not None and addr.service is not None:
            vnet_dhcp.add(net_name)
        if net.mode == "isolated" and wants_service(topo, net_name):
            service_ports.elements.append(_q(names.veth_host(topo.name, f"svc-{net_name}")))
    service_ports.elements += [x for x in more_service_ports if x not in service_ports.elements]
    reserved_ips.update(p.address for p in port_list if p.address)

    limits: list[str] = []
    for i, port in enumerate(port_list):
        name = _q(port.ifname)
        if port.spoofing == "deny":
            guarded.elements.append(name)
            port_mac.elements.append(f"{name} . {port.mac}")
            nd_mac.elements.append(f"{name} . 0x{port.mac.replace(':', '')}")
            known6 = port_addresses6(topo, port)
            (ip6_guarded if known6 is not None else free6_guarded).elements.append(name)
            for a6 in known6 or (link_local(port.mac),):  # a free port's own link-local is still its own
                text6 = v6text(a6)
                port_ip6.elements.append(f"{name} . {text6}")
                nd_target.elements.append(f"{name} . 0x{int(a6):032x}")
                if known6 is not None and not port.rate:
                    fixed6_ok.elements.append(f"{name} . {port.mac} . {text6}")
            if port.address:
                ip_guarded.elements.append(name)
                port_ip.elements.append(f"{name} . {port.address}")
                if not port.rate:
                    fixed_ok.elements.append(f"{name} . {port.mac} . {port.address}")
                kind = "fixed"
            elif _port_spec(topo, port.ifname)[1] in vnet_dhcp:
                dhcp_guarded.elements.append(name)
                kind = "dhcp"
            else:
                free_guarded.elements.append(name)
                kind = "free"
            guard_ports.elements.append(f"{name} . {port.mac} : goto guard_{kind}")
        if port.isolated:
            isolated_ports.elements.append(name)
        if port.rate:
            bits = rate_bits(port.rate)
            # in bytes: nft's kbytes are 1024 bytes, and would round small rates down to zero
            limits.append(f"  limit up{i} {{ rate over {bits // 8} bytes/second burst {upload_burst(bits)} bytes }}")
            upload.elements.append(f"{name} : \"up{i}\"")
    # in numeric order, by their packed bytes (a thousand IPv4Address objects compared in Python
    # were a twentieth of the ruleset's rendering)
    reserved.elements = sorted(reserved_ips, key=_socket.inet_aton)
    if free6_guarded.elements:
        taken = _reserved6(topo, port_list)
        reserved6.elements = [v6text(a) for a in taken]
        reserved_nd.elements = [f"0x{int(a):032x}" for a in taken]

    # A frame from a guarded port, sent from the port's own MAC, goes by one map lookup to the
    # checks of its kind of port (where it used to pass a lookup of the port, one of its MAC and one
    # per kind of port), which send it on, by its type, to the checks of that protocol alone: an
    # IPv4 frame walks no ARP or IPv6 rule, and one from a port with a fixed address no DHCP rule.
    # Any other frame of a guarded port (from another MAC) is dropped by the rule after the lookup.
    # A frame that passes its checks meets the upload limit at their end: it went there by goto and
    # does not come back to the prerouting chain. Every guard only drops, so the order of the checks
    # decides nothing but which one counts a drop. Without a port's upload rate there is no limit
    # rule to pass (the limits' own lines change the structure anyway when a rate comes or goes).
    limit = ["limit name iifname map @upload_limits drop"] if upload.elements else []
    # Which rules a topology needs decides which the bridge table holds (a chain without rules is
    # left out, and with it its hook): every frame that crosses a hook pays for each rule there.
    # Leases are learned only where a port's address is a lease (only the checks of such ports
    # read `leased`), from a service port only where there is one.
    learn = bool(dhcp_guarded.elements)
    prerouting = [
        # The fast path, first: a TCP frame from a port with a fixed address and no upload rate,
        # sent from the port's own MAC and own address, untagged (the same test of `ether type`
        # and `meta protocol` as guard_fixed's), passes every check of guard_fixed and
        # guard_ip_fixed (TCP is no DHCP server and no ARP; its source is not 0.0.0.0): one lookup
        # accepts it, where the checks cost three lookups and their comparisons. Any other frame,
        # a spoofed one among them, goes on to the checks.
        *(["meta l4proto tcp ether type ip meta protocol ip iifname . ether saddr . ip saddr @fixed_ok accept"] if fixed_ok.elements else []),
        # the same for IPv6 from a port whose IPv6 addresses vnet knows: guard_ip6 lets TCP from
        # them through (its drops are of DHCP servers, ICMPv6 roles, :: and other addresses)
        *(["meta l4proto tcp ether type ip6 meta protocol ip6 iifname . ether saddr . ip6 saddr @fixed6_ok accept"] if fixed6_ok.elements else []),
        *(["iifname . ether saddr vmap @guard_ports", f"iifname @guarded {COUNT_GUARD_DROP} drop"] if guarded.elements else []),
        # a DHCPACK from an isolated network's service port (chaddr . yiaddr; option 53 comes
        # first); the frame's type and ports first, so that any other frame passes by comparisons
        *([LEARN.replace(" add @leased", " iifname @service_ports add @leased", 1)] if learn and service_ports.elements else []),
        *limit,
    ]
    # untagged ARP, IPv4 and IPv6 only: a frame with any tag (802.1Q, 802.1ad, stacked, VLAN 0) is
    # dropped before a check below could miss it (CVE-2021-27853). A tag shows in `ether type`
    # (nftables puts an offloaded tag back); `meta protocol` is the kernel's idea of the frame,
    # which the IPv4 and IPv6 checks depend on: the two must agree, or the frame is dropped (it
    # would escape the checks of the one protocol it is sent on as)
    kinds = ("fixed", "dhcp", "free")
    by_kind = {
        f"guard_{kind}": [f"ether type . meta protocol vmap {{ arp . arp : goto guard_arp, ip . ip : goto guard_ip_{kind}, ip6 . ip6 : goto guard_ip6 }}", "drop"]
        for kind in kinds
    }
    guard_arp = [
        # ARP for Ethernet and IPv4 only, from the port's own MAC
        "arp htype != 1 drop",
        "arp ptype != ip drop",
        "arp hlen != 6 drop",
        "arp plen != 4 drop",
        "iifname . arp saddr ether != @port_mac drop",
        "iifname @ip_guarded arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @port_ip drop",
        "iifname @dhcp_guarded arp saddr ip != 0.0.0.0 @ll,48,48 . @nh,112,32 != @leased drop",  # ether saddr . arp saddr ip
        "iifname @free_guarded arp saddr ip @reserved_ip drop",
    ]
    guard_ip = [
        # DHCP and DHCPv6 servers are vnet's, never a port's
        "udp sport { 67, 547 } drop",
        # from 0.0.0.0 only a DHCP client's request
        "ip saddr 0.0.0.0 meta l4proto . th dport != { udp . 67 } drop",
    ]
    guard_ip_kind = {
        "fixed": "ip saddr != 0.0.0.0 iifname . ip saddr != @port_ip drop",
        # DHCP snooping: only the address vnet's dnsmasq leased to this MAC (held to the port above)
        "dhcp": "ip saddr != 0.0.0.0 @ll,48,48 . @nh,96,32 != @leased drop",  # ether saddr . ip saddr
        # an address vnet does not know: anything but the gateway's, a service's or another port's
        "free": "ip saddr @reserved_ip drop",
    }
    guard_ip6 = [
        # DHCP and DHCPv6 servers, router advertisements and redirects are vnet's, never a port's
        "udp sport { 67, 547 } drop",
        "icmpv6 type { nd-router-advert, nd-redirect, router-renumbering } drop",
        # from :: only address detection (neighbour solicitations, MLD reports)
        "ip6 saddr :: meta l4proto != ipv6-icmp drop",
        "ip6 saddr :: icmpv6 type != { nd-neighbor-solicit, mld-listener-report, mld2-listener-report } drop",
        "iifname @ip6_guarded ip6 saddr != :: iifname . ip6 saddr != @port_ip6 drop",
        # an address vnet does not know: anything but a gateway's, a service's or another port's
        "iifname @free6_guarded ip6 saddr @reserved_ip6 iifname . ip6 saddr != @port_ip6 drop",
        # a neighbour advertisement claims the port's own address for the port's own MAC, with no
        # option but the target link-layer address
        "icmpv6 type nd-neighbor-advert ip6 length != { 24, 32 } drop",
        "iifname @ip6_guarded icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @nd_target drop",
        "iifname @free6_guarded icmpv6 type nd-neighbor-advert @th,64,128 @reserved_nd iifname . @th,64,128 != @nd_target drop",
        "icmpv6 type nd-neighbor-advert ip6 length 32 iifname . @th,208,48 != @nd_mac drop",
    ]

    # each guard's drop is counted per port, in one dynamic set (`vnet status --tables`): the rules
    # and the set stay the same whatever the number of ports
    def counted(rules: list[str]) -> list[str]:
        return [f"{COUNT_GUARD_DROP} drop" if r == "drop" else r.removesuffix(" drop") + f" {COUNT_GUARD_DROP} drop" if r.endswith(" drop") else r for r in rules]

    chains = [(name, counted(rules)) for name, rules in by_kind.items()]
    # the checks of each protocol, each with the upload limit last (a frame over it is not a guard's drop)
    checks = [("guard_arp", guard_arp), *((f"guard_ip_{kind}", guard_ip + [guard_ip_kind[kind]]) for kind in kinds), ("guard_ip6", guard_ip6)]
    chains += [(name, counted(rules) + limit) for name, rules in checks]
    # a DHCPACK of vnet's dnsmasq on the host
    output = [LEARN] if learn else []
    # an isolated port still reaches its network's DHCP/DNS service, which is a port too
    forward = [
        "iifname @isolated_ports oifname != @service_ports drop",
        "oifname @isolated_ports iifname != @service_ports drop",
    ] if isolated_ports.elements else []
    sets = [guarded, port_mac, guard_ports, ip_guarded, port_ip, fixed_ok, dhcp_guarded, free_guarded, reserved, leased, ip6_guarded, port_ip6,
            fixed6_ok, nd_target, free6_guarded, reserved6, reserved_nd, nd_mac, isolated_ports, service_ports, upload, guard_drops]
    needed = bool(guarded.elements or isolated_ports.elements or upload.elements)
    return _Guards(limits, sets, prerouting, forward, output, needed, chains)


BGP_PORT = 179


class OverlayRules:
    """What overlay networks (kinds/vxlan.py) add to the ruleset; empty without them."""

    __slots__ = ("inet_sets", "input", "bridge_sets", "bridge_pre", "bridge_out", "service_ports")
    inet_sets: list[_Set]
    input: list[str]
    bridge_sets: list[_Set]
    bridge_pre: list[str]
    bridge_out: list[str]
    service_ports: list[str]

    def __init__(self) -> None:
        self.inet_sets = []
        self.input = []
        self.bridge_sets = []
        self.bridge_pre = []
        self.bridge_out = []
        self.service_ports = []


def overlay_rules(topo: Topology, facts: HostFacts) -> OverlayRules:
    """The VXLAN port takes datagrams from the other hosts only; frames from or to the gateway
    MAC, which every host carries (anycast gateway), never cross the tunnel; the port of an
    overlay network's DHCP/DNS namespace is a service port for isolated ports."""
    from vnet import overlay  # here: overlay imports facts, which the renderers share

    out = OverlayRules()
    if facts.host is None or not any(net.overlay for net in topo.networks.values()):
        return out
    vxlan_ports = _Set("vxlan_ports", "inet_service")
    peers4 = _Set("vxlan_peers", "inet_service . ipv4_addr")
    peers6 = _Set("vxlan_peers6", "inet_service . ipv6_addr")
    anycast = _Set("anycast", "ifname . ether_addr")
    # conntrack has nothing to do for frames an overlay bridge switches (br_netfilter, where
    # loaded, would track each connection once as inner frames and once as the tunnel's datagrams
    # on each host: measured +12% connections/s across the overlay without it). Frames in from the
    # tunnel and unicast frames from a port of the network to another MAC than the gateway's are
    # not tracked; what the host routes (through the gateway MAC) and broadcasts stay tracked.
    untracked = _Set("overlay_ports", "ifname")
    gateways = _Set("overlay_gateways", "ether_addr")
    for net_name, net in topo.networks.items():
        if net.overlay is None:
            continue
        untracked.elements.append(_q(names.vxlan(topo.name, net_name)))
        untracked.elements += [_q(p.ifname) for p in ports(topo) if p.network == net_name]
        gw = names.local_mac(topo.name, net_name, "bridge")
        if gw not in gateways.elements:
            gateways.elements.append(gw)
        port = net.overlay.port
        if str(port) not in vxlan_ports.elements:
            vxlan_ports.elements.append(str(port))
        for peer in overlay.peers(topo, facts):
            target = peers6 if ":" in peer else peers4
            element = f"{port} . {peer}"
            if element not in target.elements:
                target.elements.append(element)
        if net.mode in ("nat", "host"):
            anycast.elements.append(f"{_q(names.vxlan(topo.name, net_name))} . {names.local_mac(topo.name, net_name, 'bridge')}")
        if (net.dhcp or net.dns) and overlay.dhcp_host(topo, net_name) == facts.host:
            service_port = _q(names.veth_host(topo.name, f"svc-{net_name}"))
            out.service_ports.append(service_port)
            untracked.elements.append(service_port)
        elif net.dhcp:
            # the network's dnsmasq runs on another host, and its lease script cannot speak here:
            # an ACK that comes through the tunnel binds the lease for its whole time, and each
            # renewal's ACK starts that time again
            seconds = duration_seconds(net.dhcp.lease)
            timeout = f" timeout {seconds + LEASE_GRACE}s" if seconds is not None else ""
            out.bridge_pre.append(f"iifname {_q(names.vxlan(topo.name, net_name))} {ACK} "
                                  f"update @leased {{ @ih,224,48 . @ih,128,32{timeout} }}")
    out.inet_sets = [vxlan_ports, peers4, peers6]
    out.input = [
        "udp dport @vxlan_ports meta nfproto ipv4 udp dport . ip saddr != @vxlan_peers drop",
        "udp dport @vxlan_ports meta nfproto ipv6 udp dport . ip6 saddr != @vxlan_peers6 drop",
    ]
    if any(net.overlay is not None and net.overlay.control == "evpn" for net in topo.networks.values()):
        # vnet's bgpd (kinds/frr.py) listens on every address: BGP only from the other hosts
        bgp4, bgp6 = _Set("bgp_peers", "ipv4_addr"), _Set("bgp_peers6", "ipv6_addr")
        for peer, _ in overlay.bgp_peers(topo, facts):
            (bgp6 if ":" in peer else bgp4).elements.append(peer)
        out.inet_sets += [bgp4, bgp6]
        out.input += [
            f"tcp dport {BGP_PORT} meta nfproto ipv4 ip saddr != @bgp_peers drop",
            f"tcp dport {BGP_PORT} meta nfproto ipv6 ip6 saddr != @bgp_peers6 drop",
        ]
    out.bridge_sets = [anycast, untracked, gateways]
    out.bridge_pre = ["iifname . ether saddr @anycast drop", "iifname . ether daddr @anycast drop", *out.bridge_pre,
                      "iifname @overlay_ports ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 ether daddr != @overlay_gateways notrack"]
    out.bridge_out = ["oifname . ether saddr @anycast drop", "oifname . ether daddr @anycast drop"]
    return out


_ELEMENTS = "elements = {"


def _is_elements(line: str) -> bool:
    return line.lstrip().startswith(_ELEMENTS)


def element_digest(lines: list[str]) -> str:
    return names.sha256("\n".join(x for x in lines if _is_elements(x)).encode()).hexdigest()[:8]


def parse(text: str) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    """(structure lines, {(family, set): elements}) of text that `render` wrote: its elements are
    joined by exactly ", " (_Set.render), so they are split by it and taken as they are (at 10,000
    forwards the map has 30,000: stripping each was a third of the parse)."""
    skeleton: list[str] = []
    sets: dict[tuple[str, str], list[str]] = {}
    family = current = ""
    for line in text.splitlines():
        # words only of the lines that name something: an elements line of 10,000 forwards is a
        # megabyte, and splitting it into words cost more than the rest of the parse
        if line.startswith("table "):
            family = line.split()[1]
        elif line.startswith(("  set ", "  map ")):
            current = line.split()[1]
            sets[(family, current)] = []
        stripped = line.lstrip()
        if stripped.startswith(_ELEMENTS):
            inner = stripped[len(_ELEMENTS) :].rstrip()[:-1].strip()
            sets[(family, current)] = inner.split(", ") if inner else []
        elif not stripped.startswith("comment "):
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
        if before == after:
            continue  # (most sets: one more forward changes one map)
        # what changed found by set difference, then taken in the texts' order
        gone_set, came_set = set(before).difference(after), set(after).difference(before)
        gone = [e for e in before if e in gone_set] if gone_set else []
        came = [e for e in after if e in came_set] if came_set else []
        if gone:
            deletes.append(f"delete element {family} {table} {name} {{ {', '.join(gone)} }}")
        if came:
            adds.append(f"add element {family} {table} {name} {{ {', '.join(came)} }}")
    return "\n".join(deletes + adds) + "\n"
