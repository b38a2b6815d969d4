"""Load a topology file and check it; every problem is reported with its path and a fix.

Two stages: `load()` parses YAML and checks the model and the relations between fields (pure, no
host access except user/group look-ups); `check_against_host()` checks what depends on the host
the topology is applied to (uplinks exist, subnets do not collide with host routes).
"""

from __future__ import annotations

import grp
import ipaddress
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vnet import names
from vnet.errors import Problem, SpecError
from vnet.spec.models import NetnsSpec, TapSpec, Topology, TunSpec, port_span

MAX_FILE_BYTES = 1 << 20


MAX_NESTING = 64  # a topology is a handful of levels deep


class _NoDuplicateKeys:
    """Rejects duplicate keys and keys that are not plain values, whichever parser runs."""

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[attr-defined]
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "keys must be plain names, not lists or mappings", key_node.start_mark
                ) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[misc]


class _PyStrictLoader(_NoDuplicateKeys, yaml.SafeLoader):
    """Pure Python, where PyYAML was built without libyaml."""


_CSafeLoader = getattr(yaml, "CSafeLoader", None)
# libyaml where PyYAML has it: a sixth of the time of the pure-Python parser
_Loader = type("_CStrictLoader", (_NoDuplicateKeys, _CSafeLoader), {}) if _CSafeLoader else _PyStrictLoader


def _screen(text: str, loader: type) -> None:
    """Read the event stream (no document is composed yet) and refuse aliases and deep nesting:
    the composer would resolve aliases itself (billion laughs), and recurses once per level."""
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in topology files", event.start_mark
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise RecursionError
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse_yaml(text: str) -> Any:
    if len(text.encode(errors="replace")) > MAX_FILE_BYTES:
        raise SpecError([Problem("", "file is larger than 1 MiB", "a topology file is small; check the path")])
    try:
        _screen(text, _Loader)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 — strict safe loader above
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f"line {where.line + 1}, column {where.column + 1}: " if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError([Problem("", f"{at}{problem}", "fix the YAML syntax")]) from None
    except RecursionError:
        raise SpecError([Problem("", "nesting is too deep", "a topology is a few levels deep")]) from None


def _path(loc: tuple) -> str:
    # pydantic puts the endpoint's kind (the union tag) into the location, right after the
    # endpoint's name; users think in keys only
    parts = list(loc)
    if len(parts) > 2 and parts[0] == "endpoints" and parts[2] in ("tap", "tun", "netns"):
        del parts[2]
    return ".".join(str(p) for p in parts)


_FIXES = {
    "extra_forbidden": "remove it, or check its spelling",
    "missing": "add it",
    "union_tag_invalid": "use kind: tap, tun or netns",
    "union_tag_not_found": "add kind: tap, tun or netns",
    "literal_error": "use one of the listed values",
}


def _model_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(Problem(_path(err["loc"]), msg, _FIXES.get(err["type"], "")))
    return problems


def load_text(text: str) -> Topology:
    data = parse_yaml(text)
    if data is None:
        raise SpecError([Problem("", "the file is empty", "declare at least `name:`")])
    if not isinstance(data, dict):
        raise SpecError([Problem("", "the top level must be a mapping", "start with `name: <topology>`")])
    try:
        topo = Topology.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_model_problems(exc)) from None
    except RecursionError:
        raise SpecError([Problem("", "nesting is too deep", "a topology is a few levels deep")]) from None
    problems = relations(topo)
    if problems:
        raise SpecError(problems)
    return topo


def load(path: str | Path) -> Topology:
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Problem(str(p), f"cannot read the file ({exc.__class__.__name__}: {exc})", "check the path")]) from None
    return load_text(text)


# --- relations between fields -------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkAddressing:
    subnet: ipaddress.IPv4Network | None
    gateway: ipaddress.IPv4Address | None  # the bridge's address (host, nat)
    service: ipaddress.IPv4Address | None  # where DHCP/DNS answer: the gateway, or an isolated network's service namespace


def addressing(topo: Topology, net_name: str) -> NetworkAddressing:
    net = topo.networks[net_name]
    subnet = ipaddress.IPv4Network(net.subnet) if net.subnet else None
    gateway = service = None
    if net.mode in ("host", "nat") and subnet is not None:
        gateway = service = ipaddress.IPv4Address(net.address) if net.address else next(subnet.hosts())
        if net.overlay is not None and (net.dhcp or net.dns):
            # every host carries the gateway address (anycast): DHCP/DNS answer from one of their own
            service = overlay_service(subnet, gateway)
    elif net.mode == "isolated" and subnet is not None and (net.dhcp or net.dns):
        service = next(subnet.hosts())
    return NetworkAddressing(subnet, gateway, service)


def overlay_service(subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
    """The address DHCP/DNS answer from on an overlay network: the one after the gateway (before
    it, when the gateway is the subnet's last host address)."""
    after = gateway + 1
    return after if after < subnet.broadcast_address else gateway - 1


def dhcp_range(topo: Topology, net_name: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The declared range, or the subnet's hosts above the service address."""
    net, addr = topo.networks[net_name], addressing(topo, net_name)
    assert net.dhcp is not None and addr.subnet is not None
    if net.dhcp.range:
        return ipaddress.IPv4Address(net.dhcp.range[0]), ipaddress.IPv4Address(net.dhcp.range[1])
    first, last = addr.subnet.network_address + 1, addr.subnet.broadcast_address - 1
    taken = sorted({a for a in (addr.gateway, addr.service) if a is not None and first <= a <= last})
    if taken:
        # one contiguous range: the largest run between the network's own addresses (the later on a tie)
        runs, start = [], first
        for a in taken:
            runs.append((start, a - 1))
            start = a + 1
        runs.append((start, last))
        first, last = max(reversed(runs), key=lambda r: int(r[1]) - int(r[0]))
    return first, last


def principal_id(value: object, kind: str) -> int | None:
    """The uid (kind "user") or gid ("group") a topology names by number or by name; None for
    none. KeyError when this host has no such name."""
    if value is None:
        return None
    text = str(value)
    if text.isdigit():
        return int(text)
    return pwd.getpwnam(text).pw_uid if kind == "user" else grp.getgrnam(text).gr_gid


def _principal_exists(value: str, kind: str) -> bool:
    try:
        principal_id(value, kind)
        return True
    except KeyError:
        return False


def relations(topo: Topology) -> list[Problem]:
    problems: list[Problem] = []
    add = problems.append
    seen_ifnames: dict[str, str] = {}

    def claim_ifname(name: str, path: str) -> None:
        if name in seen_ifnames:
            add(Problem(path, f"interface name {name!r} is also used by {seen_ifnames[name]}", "choose another name"))
        else:
            seen_ifnames[name] = path

    subnets: list[tuple[str, ipaddress.IPv4Network]] = []
    for net_name, net in topo.networks.items():
        path = f"networks.{net_name}"
        claim_ifname(net.bridge or names.bridge(topo.name, net_name), f"{path}.bridge")
        if net.mode in ("host", "nat") and not net.subnet:
            add(Problem(f"{path}.subnet", f"is required in {net.mode} mode", "add e.g. subnet: 192.168.50.0/24"))
        if net.mode in ("isolated", "bridged") and net.address:
            add(Problem(f"{path}.address", f"the bridge has no address in {net.mode} mode", "remove it, or use mode: host"))
        if net.mode == "bridged" and not net.uplink:
            add(Problem(f"{path}.uplink", "is required in bridged mode", "name the NIC that joins the bridge, e.g. uplink: eth0"))
        if net.mode in ("isolated", "host") and net.uplink:
            add(Problem(f"{path}.uplink", f"has no meaning in {net.mode} mode", "remove it, or use mode: nat or bridged"))
        if net.subnet:
            subnet = ipaddress.IPv4Network(net.subnet)
            for other_name, other in subnets:
                if subnet.overlaps(other):
                    add(Problem(f"{path}.subnet", f"{subnet} overlaps networks.{other_name}.subnet {other}", "use a separate range"))
            subnets.append((net_name, subnet))
            if net.address:
                gw = ipaddress.IPv4Address(net.address)
                if gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
                    add(Problem(f"{path}.address", f"{gw} is not a host address of {subnet}", "pick an address inside the subnet"))

    uplinks: dict[str, str] = {}
    for net_name, net in topo.networks.items():
        if net.mode == "bridged" and net.uplink:
            if net.uplink in uplinks:
                add(Problem(f"networks.{net_name}.uplink", f"{net.uplink} already joins networks.{uplinks[net.uplink]}", "a NIC can join one bridge"))
            uplinks[net.uplink] = net_name

    macs: dict[str, str] = {}
    addresses: dict[ipaddress.IPv4Address, str] = {}
    for ep_name, ep in topo.endpoints.items():
        path = f"endpoints.{ep_name}"
        network = getattr(ep, "network", None)
        if network is not None and network not in topo.networks:
            known = ", ".join(topo.networks) or "none declared"
            add(Problem(f"{path}.network", f"no network named {network!r} (known: {known})", "declare it under networks:"))
            network = None
        if isinstance(ep, (TapSpec, TunSpec)):
            claim_ifname(names.endpoint_tap(topo.name, ep_name, ep.ifname), f"{path}.ifname")
        elif isinstance(ep, NetnsSpec):
            claim_ifname(names.veth_host(topo.name, ep_name), path)
        mac = getattr(ep, "mac", None)
        if mac:
            if mac in macs:
                add(Problem(f"{path}.mac", f"{mac} is also the MAC of endpoints.{macs[mac]}", "MACs must be unique; omit it to get a stable unique one"))
            macs[mac] = ep_name
        for field in ("owner", "group"):
            value = getattr(ep, field, None)
            if value is not None and not _principal_exists(str(value), "user" if field == "owner" else "group"):
                add(Problem(f"{path}.{field}", f"no {'user' if field == 'owner' else 'group'} {value!r} on this host", "create it, or use a number"))
        address = getattr(ep, "address", None)
        if address:
            iface = ipaddress.IPv4Interface(address)
            if iface.ip in addresses:
                add(Problem(f"{path}.address", f"{iface.ip} is also the address of {addresses[iface.ip]}", "give each endpoint its own address"))
            addresses[iface.ip] = path
            if isinstance(ep, TunSpec):
                for net_name, subnet in subnets:
                    if iface.network.overlaps(subnet):
                        add(Problem(f"{path}.address", f"{iface.network} overlaps networks.{net_name}.subnet", "use a separate range"))
        if address and network:
            net = topo.networks[network]
            iface = ipaddress.IPv4Interface(address)
            addr = addressing(topo, network)
            if net.mode == "bridged":
                pass  # the LAN's addressing is not declared; any address may be right
            elif addr.subnet is None:
                add(Problem(f"{path}.address", f"networks.{network} has no subnet", f"add subnet: {iface.network} to networks.{network}"))
            elif iface.network != addr.subnet:
                add(Problem(f"{path}.address", f"{iface} is not inside networks.{network}.subnet {addr.subnet}", f"use an address in {addr.subnet} with /{addr.subnet.prefixlen}"))
            elif iface.ip in (addr.subnet.network_address, addr.subnet.broadcast_address):
                add(Problem(f"{path}.address", f"{iface.ip} is the network or broadcast address", "pick a host address"))
            elif addr.gateway is not None and iface.ip == addr.gateway:
                add(Problem(f"{path}.address", f"{iface.ip} is the gateway (bridge) address", "pick another host address"))
            elif addr.service is not None and iface.ip == addr.service:
                add(Problem(f"{path}.address", f"{iface.ip} is the address of the network's DHCP/DNS service", "pick another host address"))
    for net_name, net in topo.networks.items():
        if net.address:
            gw = ipaddress.IPv4Address(net.address)
            if gw in addresses:
                add(Problem(f"networks.{net_name}.address", f"{gw} is also the address of {addresses[gw]}", "pick another address"))
    netns_names: dict[str, str] = {}
    for ep_name, ep in topo.endpoints.items():
        if isinstance(ep, NetnsSpec):
            ns = names.endpoint_netns(topo.name, ep_name, ep.netns)
            if ns in netns_names:
                add(Problem(f"endpoints.{ep_name}.netns", f"namespace {ns!r} is also used by endpoints.{netns_names[ns]}", "one endpoint per namespace"))
            netns_names[ns] = ep_name
    _services(topo, add)
    _vms(topo, add, claim_ifname, macs, addresses)
    _forwards(topo, add)
    _allows(topo, add)
    _names(topo, add)
    _hosts(topo, add)
    return problems


def _hosts(topo: Topology, add) -> None:
    """`hosts:`, `host:` of endpoints and VMs, and `overlay:` of networks."""
    seen: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
    for h, a in topo.hosts.items():
        ip = ipaddress.ip_address(a)
        if ip in seen:
            add(Problem(f"hosts.{h}", f"{a} is also the address of hosts.{seen[ip]}", "give each host its own underlay address"))
        seen.setdefault(ip, h)
    known = ", ".join(topo.hosts)
    placed = [(f"endpoints.{n}", ep.host) for n, ep in topo.endpoints.items()] + [(f"vms.{n}", vm.host) for n, vm in topo.vms.items()]
    for path, host in placed:
        if topo.hosts and host is None:
            add(Problem(f"{path}.host", "is required when the topology declares hosts:", f"add host: with one of {known}"))
        elif host is not None and not topo.hosts:
            add(Problem(f"{path}.host", "names a host, but the topology declares no hosts:", "add hosts: (name → underlay address), or remove host:"))
        elif host is not None and host not in topo.hosts:
            add(Problem(f"{path}.host", f"no host named {host!r} (known: {known})", "name one of hosts:"))
    vnis: dict[int, str] = {}
    for net_name, net in topo.networks.items():
        path = f"networks.{net_name}"
        if net.overlay is not None:
            if not topo.hosts:
                add(Problem(f"{path}.overlay", "needs the hosts it spans", "add hosts: (name → underlay address)"))
            if net.mode == "bridged":
                add(Problem(f"{path}.overlay", "a bridged network is the LAN's; it does not span hosts", "use mode: nat, host or isolated"))
            if net.overlay.control == "evpn":
                add(Problem(f"{path}.overlay.control", "evpn is not supported yet", "use control: static"))
            if net.overlay.vni in vnis:
                add(Problem(f"{path}.overlay.vni", f"{net.overlay.vni} is also the VNI of networks.{vnis[net.overlay.vni]}", "give each overlay network its own VNI"))
            vnis.setdefault(net.overlay.vni, net_name)
            if net.mtu is not None and net.mtu > 65535 - 70 and any(":" in a for a in topo.hosts.values()):
                add(Problem(f"{path}.mtu", f"{net.mtu} cannot fit in any IPv6 underlay with VXLAN's 70 bytes", "use at most 65465, or omit it"))
            elif net.mtu is not None and net.mtu > 65535 - 50:
                add(Problem(f"{path}.mtu", f"{net.mtu} cannot fit in any underlay with VXLAN's 50 bytes", "use at most 65485, or omit it"))
        if net.dhcp is not None and net.dhcp.host is not None:
            if net.overlay is None:
                add(Problem(f"{path}.dhcp.host", "only an overlay network spans hosts", "remove it, or add overlay:"))
            elif net.dhcp.host not in topo.hosts:
                add(Problem(f"{path}.dhcp.host", f"no host named {net.dhcp.host!r} (known: {known})", "name one of hosts:"))


def known_address(topo: Topology, name: str, network: str) -> ipaddress.IPv4Address | None:
    """The fixed address of endpoint or VM `name` on `network`: declared, or a DHCP reservation."""
    ep = topo.endpoints.get(name)
    if isinstance(ep, NetnsSpec) and ep.network == network and ep.address:
        return ipaddress.IPv4Interface(ep.address).ip
    if isinstance(ep, TunSpec) and ep.address:
        return None
    vm = topo.vms.get(name)
    for nic in vm.nics if vm else ():
        if nic.network == network and nic.address:
            return ipaddress.IPv4Address(nic.address)
    return None


def forward_target(topo: Topology, network: str, to: str) -> tuple[ipaddress.IPv4Address | None, int | None]:
    """(address, port or None for 'the same port') of a forward's `to:`; address None if unknown."""
    host, _, port = to.partition(":")
    address = ipaddress.IPv4Address(host) if host[0].isdigit() else known_address(topo, host, network)
    return address, int(port) if port else None


def _forwards(topo: Topology, add) -> None:
    seen: dict[tuple[str, int], str] = {}
    for net_name, net in topo.networks.items():
        for i, fwd in enumerate(net.forwards):
            path = f"networks.{net_name}.forwards.{i}"
            if net.mode != "nat":
                add(Problem(path, f"port forwards need mode: nat (this network is {net.mode})", "move it to a nat network"))
                continue
            lo, hi = port_span(fwd.port)
            for port in range(lo, hi + 1):
                if (fwd.proto, port) in seen:
                    add(Problem(f"{path}.port", f"{fwd.proto} port {port} is already forwarded by {seen[(fwd.proto, port)]}", "forward each port once"))
                    break
                seen[(fwd.proto, port)] = path
            address, to_port = forward_target(topo, net_name, fwd.to)
            name = fwd.to.partition(":")[0]
            addr = addressing(topo, net_name)
            if address is None:
                if name in topo.endpoints or name in topo.vms:
                    add(Problem(f"{path}.to", f"{name} has no fixed address on {net_name}", "give it address: (or a DHCP reservation) to forward to it"))
                else:
                    add(Problem(f"{path}.to", f"no endpoint or VM named {name!r}", "name one, or write its address"))
            elif addr.subnet is None or address not in addr.subnet or address in (addr.gateway, addr.subnet.network_address, addr.subnet.broadcast_address):
                add(Problem(f"{path}.to", f"{address} is not a host address of networks.{net_name}.subnet", "forward to an address inside the network"))
            if to_port is not None and lo != hi:
                add(Problem(f"{path}.to", "a port range forwards to the same ports", "drop the :port from to:"))


def _allows(topo: Topology, add) -> None:
    for i, rule in enumerate(topo.allow):
        path = f"allow.{i}"
        for field, name in (("from", rule.from_), ("to", rule.to)):
            net = topo.networks.get(name)
            if net is None:
                add(Problem(f"{path}.{field}", f"no network named {name!r}", "name a network of this topology"))
            elif net.mode in ("isolated", "bridged"):
                add(Problem(f"{path}.{field}", f"networks.{name} is {net.mode}: it is not routed by the host", "allow between host or nat networks"))
        if rule.from_ == rule.to:
            add(Problem(path, "from and to are the same network", "traffic inside a network is always allowed"))
        if rule.ports and not rule.proto:
            add(Problem(f"{path}.ports", "ports need a protocol", "add proto: tcp or proto: udp"))

def _free_host(ip: ipaddress.IPv4Address, subnet: ipaddress.IPv4Network, service: ipaddress.IPv4Address | None) -> bool:
    return ip in subnet and ip not in (subnet.network_address, subnet.broadcast_address, service)


def _names(topo: Topology, add) -> None:
    """Things vnet derives from names must not collide: namespaces, DNS names, tap MACs."""
    for vm_name in topo.vms:
        if vm_name in topo.endpoints:
            add(Problem(f"vms.{vm_name}", f"{vm_name!r} is also an endpoint's name", "name VMs and endpoints apart (both become DNS names)"))
    taken_ns = {names.endpoint_netns(topo.name, n, ep.netns): n for n, ep in topo.endpoints.items() if isinstance(ep, NetnsSpec)}
    for net_name, net in topo.networks.items():
        if net.mode == "isolated" and (net.dhcp or net.dns):
            ns = names.service_netns(topo.name, net_name)
            if ns in taken_ns:
                add(Problem(f"endpoints.{taken_ns[ns]}", f"its namespace {ns} is the one serving networks.{net_name}", "rename the endpoint"))
    from vnet.dnsconf import hostname, nic_hostname  # here: dnsconf and qemuargs import the spec
    from vnet.qemuargs import nic_mac

    for net_name in topo.networks:
        seen: dict[str, str] = {}
        candidates = [(hostname(n), f"endpoints.{n}") for n, ep in topo.endpoints.items() if getattr(ep, "network", None) == net_name]
        for vm_name, vm in topo.vms.items():
            for i, nic in enumerate(vm.nics):
                if nic.network == net_name:
                    candidates.append((nic_hostname(vm_name, i), f"vms.{vm_name}.nics.{i}"))
        for dns_name, path in candidates:
            if dns_name in seen and seen[dns_name].split(".")[:2] != path.split(".")[:2]:
                add(Problem(path, f"its DNS name {dns_name!r} on networks.{net_name} is also {seen[dns_name]}'s", "rename one of them"))
            seen.setdefault(dns_name, path)
    tap_macs: dict[str, tuple[str, str]] = {}
    for vm_name, vm in topo.vms.items():
        for i, nic in enumerate(vm.nics):
            guest = nic_mac(topo, vm_name, i)
            mac = names.tap_mac(guest)
            other = tap_macs.get(mac)
            if other and other[1] != guest:  # the same guest MAC twice is reported already
                add(Problem(f"vms.{vm_name}.nics.{i}.mac", f"its tap would share MAC {mac} with {other[0]} (only the first byte differs)", "change more than the first byte"))
            tap_macs.setdefault(mac, (f"vms.{vm_name}.nics.{i}", guest))


def _services(topo: Topology, add) -> None:
    for net_name, net in topo.networks.items():
        path = f"networks.{net_name}"
        for field in ("dhcp", "dns"):
            if getattr(net, field) is None:
                continue
            if net.mode == "bridged":
                add(Problem(f"{path}.{field}", "a bridged network is served by its LAN's DHCP/DNS", f"remove {field}:, or use mode: nat"))
            elif not net.subnet:
                add(Problem(f"{path}.subnet", f"is required to serve {field.upper()}", "add e.g. subnet: 10.20.0.0/24"))
        if net.dhcp is None or net.mode == "bridged" or not net.subnet:
            continue
        addr = addressing(topo, net_name)
        subnet = addr.subnet
        assert subnet is not None
        first, last = dhcp_range(topo, net_name)
        if net.dhcp.range:
            for i, a in enumerate((first, last)):
                if a not in subnet or a in (subnet.network_address, subnet.broadcast_address):
                    add(Problem(f"{path}.dhcp.range.{i}", f"{a} is not a host address of {subnet}", "keep the range inside the subnet"))
            if first > last:
                add(Problem(f"{path}.dhcp.range", f"{first} comes after {last}", "write the lower address first"))
            elif addr.service is not None and first <= addr.service <= last:
                add(Problem(f"{path}.dhcp.range", f"includes {addr.service}, the network's own address", "start the range above it"))
        elif first > last:
            add(Problem(f"{path}.subnet", "leaves no address to hand out", "use a larger subnet"))
        seen: dict[str, int] = {}
        reserved: dict[ipaddress.IPv4Address, int] = {}
        for i, h in enumerate(net.dhcp.hosts):
            ip = ipaddress.IPv4Address(h.address)
            if not _free_host(ip, subnet, addr.service):
                add(Problem(f"{path}.dhcp.hosts.{i}.address", f"{h.address} is not a free host address of {subnet}", "pick one inside the subnet"))
            if ip in reserved:
                add(Problem(f"{path}.dhcp.hosts.{i}.address", f"{ip} is also reserved by hosts.{reserved[ip]}", "one reservation per address"))
            reserved[ip] = i
            if h.mac in seen:
                add(Problem(f"{path}.dhcp.hosts.{i}.mac", f"{h.mac} is also reserved by hosts.{seen[h.mac]}", "one reservation per MAC"))
            seen[h.mac] = i
        for i, r in enumerate(net.dhcp.routes):
            if ipaddress.IPv4Address(r.via) not in subnet:
                add(Problem(f"{path}.dhcp.routes.{i}.via", f"{r.via} is not inside {subnet}", "clients can only use a gateway on their subnet"))


def _vms(topo: Topology, add, claim_ifname, macs: dict[str, str], addresses: dict) -> None:
    from vnet.qemuargs import nic_mac, nic_tap  # here: qemuargs imports the spec

    for ep_name, ep in topo.endpoints.items():
        mac = getattr(ep, "mac", None)
        if mac is None and isinstance(ep, (TapSpec, NetnsSpec)):
            macs.setdefault(names.mac(topo.name, ep_name), ep_name)  # derived MACs may not collide either
    for vm_name, vm in topo.vms.items():
        path = f"vms.{vm_name}"
        if sum(bool(x) for x in (vm.image, vm.kernel or vm.disk)) != 1:
            add(Problem(path, "needs exactly one of image:, kernel: (with initrd, append) or disk:", "e.g. image: tiny for vnet's test guest"))
        if (vm.initrd or vm.append) and not vm.kernel:
            add(Problem(f"{path}.kernel", "initrd: and append: need a kernel:", "add kernel:, or remove them"))
        if not vm.nics:
            add(Problem(f"{path}.nics", "is empty", "attach the VM to a network: nics: [{network: <name>}]"))
        for i, nic in enumerate(vm.nics):
            npath = f"{path}.nics.{i}"
            if nic.network not in topo.networks:
                add(Problem(f"{npath}.network", f"no network named {nic.network!r}", "declare it under networks:"))
                continue
            claim_ifname(nic_tap(topo, vm_name, i), f"{npath}.ifname")
            mac = nic_mac(topo, vm_name, i)
            if mac in macs:
                add(Problem(f"{npath}.mac", f"{mac} is also the MAC of {macs[mac]}", "MACs must be unique; omit it to get a stable unique one"))
            macs[mac] = npath
            if nic.address:
                ip = ipaddress.IPv4Address(nic.address)
                net = topo.networks[nic.network]
                addr = addressing(topo, nic.network)
                if net.dhcp is None:
                    add(Problem(f"{npath}.address", f"networks.{nic.network} serves no DHCP to reserve it in", "add dhcp: to the network, or configure the guest yourself"))
                elif addr.subnet is None or not _free_host(ip, addr.subnet, addr.service):
                    add(Problem(f"{npath}.address", f"{ip} is not a free host address of networks.{nic.network}", "pick one inside the subnet"))
                if ip in addresses:
                    add(Problem(f"{npath}.address", f"{ip} is also the address of {addresses[ip]}", "give each NIC its own address"))
                addresses[ip] = npath
