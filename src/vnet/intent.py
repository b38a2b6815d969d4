"""What traffic a topology declares: reachable or blocked, for every pair of peers. Pure.

`vnet check` probes real traffic and compares it with this. Each expectation carries the setting
that decides it, so a mismatch can be explained in the file's own terms ("networks.lan0.mode: host
— nothing is forwarded beyond the host").

Peers are the probe-able participants of a topology:

- `endpoint` — a netns endpoint (vnet can run code in its namespace);
- `vm` — one NIC of a VM (probed through the guest agent, or by ARP from the bridge);
- `gateway` — the host's address on a host or nat network's bridge;
- `host` — the host itself, by its own (uplink) address; as a source, its namespace;
- `outside` — a machine beyond the uplink (the sandbox's WAN), when there is one;
- `forward` — a port forward, reached at the host's address and the forward's port.

Tap endpoints without a VM and tun endpoints have nothing behind them to answer: they are listed
as skipped, with the reason.

The rules mirror what vnet builds (nftrules.py): traffic inside a network is switched by the bridge
(only `isolated:` ports stop it); between networks it is routed by the host and dropped unless an
`allow:` rule lets it through; the host's own addresses answer from host and nat networks (vnet
does not filter the host's input, except from isolated networks); nat networks reach the outside,
masqueraded, and nothing from outside opens a connection in except through a forward; bridged
networks are the LAN itself.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from vnet.spec.models import NetnsSpec, TapSpec, Topology, TunSpec, port_span
from vnet.spec.validate import addressing, forward_target, known_address

PROTOS = ("icmp", "tcp", "udp")
DEFAULT_MTU = 1500
HOST, OUTSIDE = "@host", "@outside"  # '@' keeps them apart from endpoint names
PROBE_PORT = 7907  # TCP and UDP listeners for the probes; moved up if a forward or allow rule uses it


@dataclass(frozen=True)
class Peer:
    name: str  # unique: "c1", "web.0" (VM NIC), "gw.lan0", "@host", "@outside", "fwd.lan0.0"
    kind: str  # endpoint | vm | gateway | host | outside | forward
    network: str | None = None
    address: str | None = None  # known from the file; None: learned on the host when probing
    isolated: bool = False
    vm: str | None = None  # the VM of a vm peer
    nic: int | None = None
    netns: str | None = None  # endpoint's namespace
    ifname: str | None = None  # endpoint's interface inside its namespace
    proto: str | None = None  # forward: its protocol,
    port: int | None = None  # the host port probed,
    target: str | None = None  # the target peer's name (None: an address nothing in the file names)
    target_address: str | None = None
    target_port: int | None = None  # the port the target listens on


@dataclass(frozen=True)
class Expect:
    src: str
    dst: str
    proto: str  # icmp | tcp | udp
    port: int | None  # tcp/udp destination port
    reachable: bool
    reason: str  # the setting that decides it


@dataclass(frozen=True)
class MtuProbe:
    network: str
    src: str
    dst: str
    mtu: int
    reason: str


@dataclass
class Intent:
    topology: str
    port: int
    peers: dict[str, Peer] = field(default_factory=dict)
    expects: list[Expect] = field(default_factory=list)
    mtu: list[MtuProbe] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why)

    def expect(self, src: str, dst: str, proto: str) -> Expect | None:
        for e in self.expects:
            if (e.src, e.dst, e.proto) == (src, dst, proto):
                return e
        return None


def probe_port(topo: Topology) -> int:
    """A port no forward or allow rule uses, so the probes' listeners collide with nothing declared."""
    used: set[int] = set()
    for net in topo.networks.values():
        for fwd in net.forwards:
            lo, hi = port_span(fwd.port)
            used.update(range(lo, hi + 1))
    for rule in topo.allow:
        for p in rule.ports or ():
            lo, hi = port_span(p)
            used.update(range(lo, hi + 1))
    port = PROBE_PORT
    while port in used:
        port += 1
    return port


def peers(topo: Topology, outside: bool = True) -> tuple[dict[str, Peer], list[tuple[str, str]]]:
    """The probe-able peers of a topology, and what cannot be probed (with why)."""
    out: dict[str, Peer] = {}
    skipped: list[tuple[str, str]] = []
    for name, ep in topo.endpoints.items():
        if isinstance(ep, NetnsSpec):
            ip = known_address(topo, name, ep.network)
            out[name] = Peer(name, "endpoint", ep.network, str(ip) if ip else None, ep.isolated,
                             netns=ep.netns or f"{topo.name}-{name}", ifname=ep.ifname)
        elif isinstance(ep, TapSpec):
            skipped.append((f"endpoints.{name}", "a tap endpoint: nothing answers until a guest opens it (declare the guest under vms: to probe it)"))
        elif isinstance(ep, TunSpec):
            skipped.append((f"endpoints.{name}", "a tun endpoint: a user-space program's device, not on a bridge"))
    for name, vm in topo.vms.items():
        for i, nic in enumerate(vm.nics):
            pname = name if len(vm.nics) == 1 else f"{name}.{i}"
            out[pname] = Peer(pname, "vm", nic.network, nic.address, nic.isolated, vm=name, nic=i)
    for net_name, net in topo.networks.items():
        gw = addressing(topo, net_name).gateway
        if gw is not None:
            out[f"gw.{net_name}"] = Peer(f"gw.{net_name}", "gateway", net_name, str(gw))
    out[HOST] = Peer(HOST, "host")
    if outside:
        out[OUTSIDE] = Peer(OUTSIDE, "outside")
    for net_name, net in topo.networks.items():
        if net.mode != "nat":
            continue
        for i, fwd in enumerate(net.forwards):
            address, to_port = forward_target(topo, net_name, fwd.to)
            lo, _ = port_span(fwd.port)
            target_name = fwd.to.partition(":")[0]
            if target_name[0].isdigit():  # an address: which endpoint or VM has it?
                target_name = next(
                    (p.name for p in out.values() if p.kind in ("endpoint", "vm") and p.network == net_name and p.address == str(address)),
                    None,
                )
            elif target_name in topo.vms:
                target_name = next((p.name for p in out.values() if p.vm == target_name and p.network == net_name), target_name)
            pname = f"fwd.{net_name}.{i}"
            if target_name is None:
                skipped.append((f"networks.{net_name}.forwards.{i}", f"forwards to {address}, which no endpoint or VM of the file has"))
            out[pname] = Peer(pname, "forward", net_name, proto=fwd.proto, port=lo, target=target_name,
                              target_address=str(address) if address else None, target_port=to_port or lo)
    return out, skipped


def _mode(topo: Topology, net: str) -> str:
    return topo.networks[net].mode


def decide(topo: Topology, src: Peer, dst: Peer, proto: str, port: int | None) -> tuple[bool, str] | None:
    """(reachable, the setting that decides it) for one probe, or None when the pair says nothing
    about the topology (the host reaching the outside, a forward probed with another protocol)."""
    if src.name == dst.name:
        return None
    if dst.kind == "forward":
        return _decide_forward(topo, src, dst, proto)
    if src.kind in ("endpoint", "vm"):
        return _from_member(topo, src, dst, proto, port)
    if src.kind == "host":
        if dst.kind in ("endpoint", "vm"):
            mode = _mode(topo, dst.network)
            if mode == "isolated":
                return False, f"networks.{dst.network}.mode: isolated — the host has no address there"
            return True, f"networks.{dst.network}.mode: {mode} — the host is on the network"
        return None  # the host's own addresses, the outside: not the topology's business
    if src.kind == "outside":
        if dst.kind in ("endpoint", "vm"):
            mode = _mode(topo, dst.network)
            if mode == "bridged":
                return True, f"networks.{dst.network}.mode: bridged — the endpoint is on the uplink's LAN"
            why = {"nat": "masqueraded out; nothing from outside opens a connection in (forwards: are the way in)",
                   "host": "nothing is forwarded beyond the host", "isolated": "reaches nothing beyond the bridge"}[mode]
            return False, f"networks.{dst.network}.mode: {mode} — {why}"
        if dst.kind == "gateway":
            return True, f"gw.{dst.network} is the host's own address; vnet does not filter the host's input"
        return None
    return None


def _from_member(topo: Topology, src: Peer, dst: Peer, proto: str, port: int | None) -> tuple[bool, str] | None:
    net, mode = src.network, _mode(topo, src.network)
    if dst.kind in ("endpoint", "vm"):
        for p in (src, dst):
            if p.isolated:  # inside its network, and to or from any other, allow: rules included
                where = f"endpoints.{p.name}" if p.kind == "endpoint" else f"vms.{p.vm}.nics.{p.nic}"
                return False, f"{where}.isolated: true — the port talks only to the gateway"
        if dst.network == net:
            return True, f"both on networks.{net} — traffic inside a network is switched by its bridge"
        dmode = _mode(topo, dst.network)
        for n, m in ((net, mode), (dst.network, dmode)):
            if m in ("isolated", "bridged"):
                return False, f"networks.{n}.mode: {m} — not routed by the host, so no traffic between networks"
        rule = _allowed(topo, net, dst.network, proto, port)
        if rule is not None:
            return True, rule
        return False, f"no allow: rule from {net} to {dst.network} for {proto}{f' port {port}' if port else ''} — networks are isolated from each other"
    if dst.kind == "gateway":
        if mode == "isolated":
            return False, f"networks.{net}.mode: isolated — the host drops what arrives from it"
        if mode == "bridged":
            return None  # the LAN's router decides whether the host's other addresses are reached
        own = "its own gateway" if dst.network == net else "an address of the host"
        return True, f"networks.{net}.mode: {mode} — {own}; the host answers on its addresses"
    if dst.kind == "host":
        if mode == "isolated":
            return False, f"networks.{net}.mode: isolated — the host has no address there and drops what arrives"
        if mode == "bridged":
            return True, f"networks.{net}.mode: bridged — the host is on the same LAN"
        return True, f"networks.{net}.mode: {mode} — the host answers on its addresses"
    if dst.kind == "outside":
        if mode == "nat":
            return True, f"networks.{net}.mode: nat — masqueraded out of the uplink"
        if mode == "bridged":
            return True, f"networks.{net}.mode: bridged — on the uplink's LAN"
        why = "nothing is forwarded beyond the host" if mode == "host" else "reaches nothing beyond the bridge"
        return False, f"networks.{net}.mode: {mode} — {why}"
    return None


def _allowed(topo: Topology, a: str, b: str, proto: str, port: int | None) -> str | None:
    for i, rule in enumerate(topo.allow):
        if rule.from_ != a or rule.to != b:
            continue
        if rule.proto is None:
            return f"allow.{i}: {a} → {b}, any protocol"
        if rule.proto != proto:
            continue
        if not rule.ports:
            return f"allow.{i}: {a} → {b}, {proto}"
        for p in rule.ports:
            lo, hi = port_span(p)
            if port is not None and lo <= port <= hi:
                return f"allow.{i}: {a} → {b}, {proto} port {p}"
    return None


def _decide_forward(topo: Topology, src: Peer, dst: Peer, proto: str) -> tuple[bool, str] | None:
    if proto != dst.proto or dst.target is None or src.name == dst.target:
        return None
    where = f"networks.{dst.network}.forwards.{dst.name.rsplit('.', 1)[1]}"
    if src.kind in ("outside", "host"):
        return True, f"{where}: {dst.proto} {dst.port} → {dst.target}:{dst.target_port}"
    if src.kind in ("endpoint", "vm"):
        mode = _mode(topo, src.network)
        if mode == "isolated":
            return False, f"networks.{src.network}.mode: isolated — reaches nothing beyond the bridge, forwards included"
        if mode not in ("host", "nat"):
            return None  # bridged: depends on the LAN's routing
        if src.isolated:
            port = f"endpoints.{src.name}" if src.kind == "endpoint" else f"vms.{src.vm}.nics.{src.nic}"
            return False, f"{port}.isolated: true — an isolated port reaches only its gateway and its network's DHCP/DNS, forwards excluded"
        if src.network == dst.network:
            return True, f"{where}: reached from inside through the host (hairpin), networks.{src.network}.mode: {mode}"
        rule = _allowed(topo, src.network, dst.network, proto, dst.target_port)
        if rule is not None:
            return True, f"{where}: published to networks.{src.network} by {rule}"
        return False, f"{where} is published to its own network and the uplink; no allow: rule from {src.network} to {dst.network} for {proto} port {dst.target_port}"
    return None


def _probe_port(topo: Topology, src: Peer, dst: Peer, proto: str, default: int) -> int | None:
    """The port a tcp/udp probe uses: an allowed port where an allow: rule names ports, so the
    probe shows the allowed path; else the probe port."""
    if proto == "icmp":
        return None
    if dst.kind == "forward":
        return dst.port
    if dst.kind in ("endpoint", "vm") and src.network and src.network != dst.network:
        for rule in topo.allow:
            if rule.from_ == src.network and rule.to == dst.network and rule.proto == proto and rule.ports:
                return port_span(rule.ports[0])[0]
    return default


def intent(topo: Topology, outside: bool = True) -> Intent:
    """Every probe `vnet check` runs for a topology, with what the file says it must find."""
    found, skipped = peers(topo, outside)
    it = Intent(topo.name, probe_port(topo), found, skipped=skipped)
    sources = [p for p in found.values() if p.kind in ("endpoint", "vm", "host", "outside")]
    for src in sources:
        for dst in found.values():
            for proto in PROTOS:
                port = _probe_port(topo, src, dst, proto, it.port)
                decided = decide(topo, src, dst, proto, port)
                if decided is not None:
                    it.expects.append(Expect(src.name, dst.name, proto, port, *decided))
    for net_name, net in topo.networks.items():
        members = [p for p in found.values() if p.kind in ("endpoint", "vm") and p.network == net_name]
        if not members:
            continue
        src = next((p for p in members if p.kind == "endpoint"), members[0])
        gw = found.get(f"gw.{net_name}")
        others = [p for p in members if p is not src and not p.isolated and not src.isolated]
        dst = gw or (others[0] if others else None)
        if dst is None:
            continue
        mtu = net.mtu or DEFAULT_MTU
        why = f"networks.{net_name}.mtu: {mtu}" if net.mtu else f"networks.{net_name}: the default MTU {DEFAULT_MTU}"
        it.mtu.append(MtuProbe(net_name, src.name, dst.name, mtu, why))
    return it


def network_of(topo: Topology, address: str) -> str | None:
    ip = ipaddress.IPv4Address(address)
    for name in topo.networks:
        subnet = addressing(topo, name).subnet
        if subnet is not None and ip in subnet:
            return name
    return None
