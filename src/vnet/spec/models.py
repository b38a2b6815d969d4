"""Typed model of a topology file.

Field-level rules (types, formats, lengths) live on the models; rules that relate fields to each
other live in `validate.py`, so that every problem of a file is reported in one run.
"""

import ipaddress
import re
from functools import lru_cache
from typing import Annotated, Literal

from vnet.names import IFNAMSIZ
from vnet.spec.schema import After, Before, Field, Model, Tagged

_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_USER_RE = re.compile(r"^([a-z_][a-z0-9_.-]*\$?|[0-9]+)$")


def _ifname(value: str) -> str:
    if not _IFNAME_RE.fullmatch(value) or value in (".", ".."):
        raise ValueError("use letters, digits, '_', '.', '-' only")
    if len(value.encode()) > IFNAMSIZ:
        raise ValueError(f"is {len(value.encode())} bytes; interface names are at most {IFNAMSIZ} bytes")
    return value


def _name(value: str) -> str:
    if not _NAME_RE.fullmatch(value) or len(value) > 32:
        raise ValueError("use lower-case letters, digits, '_' or '-', starting with a letter, at most 32 characters")
    return value


def _mac(value: str) -> str:
    value = value.lower()
    if not _MAC_RE.fullmatch(value):
        raise ValueError("write a MAC as six hex pairs, like 52:54:00:12:34:56")
    if int(value[:2], 16) & 1:
        raise ValueError("is a multicast MAC; the first byte must be even (52:54:00:… is the usual prefix)")
    if value == "00:00:00:00:00:00":
        raise ValueError("the all-zero MAC is not a valid address")
    return value


def _network(value: str) -> str:
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"is not an IPv4 network like 192.168.10.0/24 ({exc})") from None
    if net.prefixlen > 30:
        raise ValueError("is too small for a gateway and endpoints; use a prefix of /30 or shorter")
    return str(net)


# ranges no network of vnet's can use: what each is, for the message
_RESERVED = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "0.0.0.0/8 means \"this network\" and is never routed"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "127.0.0.0/8 is loopback"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "169.254.0.0/16 is link-local"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "224.0.0.0/4 is multicast"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "240.0.0.0/4 is reserved (class E) and the broadcast address"),
)
_USABLE_HINT = "use a private range such as 10.x, 172.16-31.x or 192.168.x"


# the same ranges as first and last address, as integers: every subnet and endpoint address is
# checked against all five, and comparing integers is a tenth of IPv4Network.overlaps
_RESERVED_SPANS = tuple((int(net.network_address), int(net.broadcast_address), what) for net, what in _RESERVED)


def _usable(net: ipaddress.IPv4Network) -> None:
    first = int(net.network_address)
    last = first | (0xFFFFFFFF >> net.prefixlen)  # the broadcast address, without making its object
    for reserved_first, reserved_last, what in _RESERVED_SPANS:
        if first <= reserved_last and reserved_first <= last:  # CIDR blocks overlap where their spans do
            raise ValueError(f"{net} is not usable: {what}; {_USABLE_HINT}")


def _ipv4_interface(text: str) -> ipaddress.IPv4Interface:
    """IPv4Interface(text). Where the text is written the one way ipaddress writes it (as files
    do: it reads back as written), it is read here and handed over as (integer, prefix length):
    ipaddress's own reading of the text is two thirds of the interface's making. Any other text,
    leading zeros, signs, spaces or numbers out of range, takes ipaddress's way."""
    address, slash, prefix_text = text.partition("/")
    octets = address.split(".")
    if slash and len(octets) == 4:
        try:
            a, b, c, d = map(int, octets)
            prefix = int(prefix_text)
        except ValueError:
            return ipaddress.IPv4Interface(text)
        if 0 <= prefix <= 32 and 0 <= a <= 255 and 0 <= b <= 255 and 0 <= c <= 255 and 0 <= d <= 255 \
                and f"{a}.{b}.{c}.{d}/{prefix}" == text:
            return ipaddress.IPv4Interface(((a << 24) | (b << 16) | (c << 8) | d, prefix))
    return ipaddress.IPv4Interface(text)


# An endpoint's address is read as an interface by validation, its relations, DNS and the
# desired state alike: parsed once per text (ipaddress objects are immutable), which at 1,000
# endpoints spares some 2,000 parses (~30 ms of every command that loads the file).
iface4 = lru_cache(maxsize=None)(_ipv4_interface)
iface6 = lru_cache(maxsize=None)(ipaddress.IPv6Interface)


def _subnet(value: str) -> str:
    _usable(ipaddress.IPv4Network(value))
    return value


def _interface(value: str) -> str:
    try:
        iface = iface4(value)
    except ValueError:
        raise ValueError("is not an IPv4 address with prefix like 192.168.10.5/24") from None
    if "/" not in value:
        raise ValueError("needs a prefix length, like 192.168.10.5/24")
    _usable(iface.network)
    return str(iface)


def _address(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError("is not an IPv4 address like 192.168.10.1") from None


def _network6(value: str) -> str:
    try:
        net = ipaddress.IPv6Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"is not an IPv6 network like 2001:db8:77::/64 ({exc})") from None
    if net.is_multicast or net.is_link_local or net.is_loopback or net.is_unspecified:
        raise ValueError("is a multicast, link-local, loopback or unspecified range; use a global or fd00::/8 prefix")
    if not 16 <= net.prefixlen <= 120:
        raise ValueError("use a prefix from /16 to /120 (/64 for SLAAC)")
    return str(net)


def _interface6(value: str) -> str:
    try:
        iface = ipaddress.IPv6Interface(value)
    except ValueError:
        raise ValueError("is not an IPv6 address with prefix like 2001:db8:77::10/64") from None
    if "/" not in value:
        raise ValueError("needs a prefix length, like 2001:db8:77::10/64")
    return str(iface)


def _address6(value: str) -> str:
    try:
        return str(ipaddress.IPv6Address(value))
    except ValueError:
        raise ValueError("is not an IPv6 address like 2001:db8:77::1") from None
def _host_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("is not an IPv4 or IPv6 address like 192.0.2.11") from None


def _reject_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("is a boolean; write a user or group name or number")
    return value


MAX_ID = 2**32 - 2  # uid_t/gid_t are 32 bits; 2**32-1 is (uid_t)-1, "no change" to chown


def _user(value: str | int) -> str:
    if isinstance(value, bool):  # YAML `yes`/`no` must not become uid 1 / uid 0 (root)
        raise ValueError("is a boolean; write a user or group name or number")
    value = str(value)
    if not _USER_RE.fullmatch(value) or len(value) > 32:
        raise ValueError("is not a user or group name or number")
    if value.isdigit() and int(value) > MAX_ID:
        raise ValueError(f"is not a valid id; user and group ids go from 0 to {MAX_ID}")
    return value


PATH_MAX = 4096


def _path(value: str) -> str:
    if "\0" in value:
        raise ValueError("contains a NUL byte; no path can")
    if not value.strip():
        raise ValueError("is empty; write a path")
    if len(value.encode()) >= PATH_MAX:
        raise ValueError(f"is longer than {PATH_MAX - 1} bytes, the longest path Linux opens")
    return value


def _text(value: str) -> str:
    if "\0" in value:
        raise ValueError("contains a NUL byte; no program argument can")
    return value


_DURATION_RE = re.compile(r"[1-9][0-9]{0,6}[smhd]?|infinite")
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_SIZE_RE = re.compile(r"[1-9][0-9]{0,6}[MG]")
MIN_MEMORY_MIB, MAX_MEMORY_MIB = 16, 1024 * 1024  # 16M (no kernel boots in less) to 1024G


def _duration(value: str) -> str:
    if not _DURATION_RE.fullmatch(value):
        raise ValueError("write a lease time like 45m, 12h, 1d or infinite")
    seconds = duration_seconds(value)
    if seconds is not None and seconds < 120:
        raise ValueError("dnsmasq needs at least 120 seconds; write e.g. 2m or 1h")
    return value


def duration_seconds(value: str) -> int | None:
    """Seconds of a lease time as the file writes it (45m, 12h, 1d); None for infinite."""
    if value == "infinite":
        return None
    unit = value[-1] if value[-1].isalpha() else "s"
    return int(value.rstrip("smhd")) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def _hostname(value: str) -> str:
    labels = value.split(".")
    if len(value) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise ValueError("write a DNS name of lower-case letters, digits and '-' per label")
    return value


def _domain(value: str) -> str:
    return _hostname(value)


def _size(value: str) -> str:
    if not _SIZE_RE.fullmatch(value):
        raise ValueError("write a size like 256M or 2G")
    if not MIN_MEMORY_MIB <= memory_mib(value) <= MAX_MEMORY_MIB:
        raise ValueError(f"{value} is out of range; guest memory goes from {MIN_MEMORY_MIB}M to {MAX_MEMORY_MIB // 1024}G")
    return value


VNC_BASE_PORT = 5900  # VNC display N listens on TCP port 5900 + N
MAX_VNC_DISPLAY = 65535 - VNC_BASE_PORT
_DISPLAY_RE = re.compile(r"vnc(?::([0-9]{1,5}))?")


def _display(value: object) -> str:
    """`none`, `vnc` (vnet picks a display number) or `vnc:N` (display N, TCP port 5900 + N)."""
    if value is None:
        return "none"
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a display: write none, vnc, or vnc:N (N from 0 to {MAX_VNC_DISPLAY})")
    if value == "none":
        return value
    m = _DISPLAY_RE.fullmatch(value)
    if not m:
        raise ValueError(f"{value!r} is not a display: write none, vnc, or vnc:N (N from 0 to {MAX_VNC_DISPLAY})")
    if m.group(1) is not None and int(m.group(1)) > MAX_VNC_DISPLAY:
        raise ValueError(f"VNC display {m.group(1)} is out of range: N goes from 0 to {MAX_VNC_DISPLAY} (TCP port 5900 + N)")
    return value


def memory_mib(value: str) -> int:
    return int(value[:-1]) * (1024 if value[-1] == "G" else 1)


_RATE_RE = re.compile(r"([1-9][0-9]{0,6})(kbit|mbit|gbit)")
_TARGET_RE = re.compile(r"([a-z][a-z0-9_-]*|[0-9.]+)(:([0-9]{1,5}))?")


def _rate(value: str) -> str:
    if not _RATE_RE.fullmatch(value):
        raise ValueError("write a rate like 500kbit, 100mbit or 1gbit")
    if not 8 * 10**3 <= rate_bits(value) <= 100 * 10**9:
        raise ValueError("rates go from 8kbit to 100gbit")
    return value


def rate_bits(value: str) -> int:
    number, unit = _RATE_RE.fullmatch(value).groups()  # type: ignore[union-attr]
    return int(number) * {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9}[unit]


def _port_range(value: int | str) -> int | str:
    lo, dash, hi = str(value).partition("-")
    if not lo.isdigit() or (dash and not hi.isdigit()) or len(lo) > 5 or len(hi) > 5:
        raise ValueError("write a port number (1-65535) or a range like 5000-5010")
    a, b = int(lo), int(hi or lo)
    if not (1 <= a <= b <= 65535):
        raise ValueError("ports are 1-65535, the lower first")
    if b - a >= 4096:
        raise ValueError("a range holds at most 4096 ports")
    return a if a == b else f"{a}-{b}"


def port_span(value: int | str) -> tuple[int, int]:
    lo, _, hi = str(value).partition("-")
    return int(lo), int(hi or lo)


def _target(value: str) -> str:
    found = _TARGET_RE.fullmatch(value)
    if not found:
        raise ValueError("write a target like web, web:80, 192.168.1.20 or 192.168.1.20:80")
    if found.group(1)[0].isdigit():
        _address(found.group(1))
    if found.group(3) and not 1 <= int(found.group(3)) <= 65535:
        raise ValueError("the target port must be 1-65535")
    return value


def _reject_none(value: object) -> object:
    if value is None:
        raise ValueError("write true, false or a range [first, last]")
    return value


def _shorthand(value: object) -> object:
    # `dhcp: true` means "with defaults"; `false` means off
    if value is True:
        return {}
    if value is False:
        return None
    return value


IfName = Annotated[str, After(_ifname)]
Name = Annotated[str, After(_name)]
Mac = Annotated[str, After(_mac)]
Network = Annotated[str, After(_network)]
Subnet = Annotated[str, After(_network), After(_subnet)]
FilePath = Annotated[str, After(_path)]
Interface = Annotated[str, After(_interface)]
Address = Annotated[str, After(_address)]
Network6 = Annotated[str, After(_network6)]
Interface6 = Annotated[str, After(_interface6)]
Address6 = Annotated[str, After(_address6)]
Principal = Annotated[str | int, Before(_reject_bool), After(_user)]


class Strict(Model):
    pass  # frozen, unknown keys refused: every model of the file is


class DhcpHost(Strict):
    mac: Mac
    address: Address
    name: Name | None = None


class DhcpRoute(Strict):
    to: Network = Field(description="destination network, e.g. 10.20.0.0/16")
    via: Address = Field(description="gateway inside the subnet")


class DhcpSpec(Strict):
    host: Name | None = Field(None, description="overlay: the host (of `hosts:`) that runs DHCP/DNS; default the first")
    range: tuple[Address, Address] | None = Field(
        None, description="first and last address handed out; default the subnet minus the gateway"
    )
    lease: Annotated[str, After(_duration)] = Field("1h", description="lease time: 45m, 12h, 1d or infinite")
    hosts: list[DhcpHost] = Field(default_factory=list, description="static leases by MAC")
    routes: list[DhcpRoute] = Field(default_factory=list, description="routes pushed to clients (option 121)")
    mtu: int | None = Field(None, ge=576, le=65535, description="MTU pushed to clients (option 26)")


class DnsSpec(Strict):
    domain: Annotated[str, After(_domain)] = Field("vnet.internal", description="endpoints resolve as <name>.<domain>")
    upstream: list[Address] | None = Field(None, description="forwarders; default the host's resolvers")
    records: dict[Annotated[str, After(_hostname)], Address] = Field(
        default_factory=dict, description="extra host records, name → address"
    )


class ForwardSpec(Strict):
    proto: Literal["tcp", "udp"] = "tcp"
    port: Annotated[int | str, Before(_reject_bool), After(_port_range)] = Field(
        description="host port, or a range like 5000-5010"
    )
    to: Annotated[str, After(_target)] = Field(
        description="endpoint or VM name, or an address, with an optional :port (default: the same port)"
    )


class AllowSpec(Strict, populate_by_name=True):
    from_: Name = Field(alias="from", description="network the connections come from")
    to: Name = Field(description="network they may reach")
    proto: Literal["tcp", "udp"] | None = Field(None, description="default: any protocol")
    ports: list[Annotated[int | str, Before(_reject_bool), After(_port_range)]] | None = Field(
        None, description="destination ports or ranges (needs proto); default: all"
    )


class OverlaySpec(Strict):
    vni: int = Field(ge=1, le=16777215, description="VXLAN network identifier, the same on every host")
    port: int = Field(4789, ge=1, le=65535, description="UDP port of the VXLAN tunnel")
    control: Literal["static", "evpn"] = Field(
        "static", description="static: every host floods to every other (head-end replication); evpn: BGP EVPN through FRR"
    )


def _asn_number(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a whole number from 1 to 4294967294, e.g. 65000")
    return value


def _asn(value: int) -> int:
    if value in (23456, 65535):
        raise ValueError(f"{value} is reserved ({'AS_TRANS' if value == 23456 else 'the last 16-bit ASN'}); use e.g. 65000 or 4200000000")
    return value


class EvpnSpec(Strict):
    asn: Annotated[int, Before(_asn_number), After(_asn)] = Field(
        65000, ge=1, le=4294967294, description="the BGP AS number every host shares (iBGP, full mesh between hosts)"
    )
    route_reflectors: list[Name] = Field(
        [], description="hosts (of hosts:) that reflect the EVPN routes: they peer with every host, the others only with them; default none (full mesh)"
    )


class NetworkSpec(Strict):
    mode: Literal["isolated", "host", "nat", "bridged"] = Field(
        description="isolated: endpoints only; host: endpoints and host; nat: masqueraded to the uplink; "
        "bridged: the uplink NIC joins the bridge"
    )
    bridge: IfName | None = Field(None, description="bridge name; default derived from topology and network")
    subnet: Subnet | None = Field(None, description="IPv4 subnet of the network (host, nat: required)")
    address: Address | None = Field(None, description="the bridge's address (host, nat); default the subnet's first")
    uplink: IfName | None = Field(
        None, description="nat: egress interface (default: the default route's); bridged: the NIC that joins"
    )
    mtu: int | None = Field(None, ge=68, le=65521, description="MTU of the bridge and its ports (at most 65521, the largest a tap takes)")
    mac: Mac | None = Field(
        None, description="the bridge's MAC (kept as is by `vnet adopt`); default stable 02:… from names (bridged: the uplink's)"
    )
    dhcp: Annotated[DhcpSpec | None, Before(_shorthand, accepts={"type": "boolean"})] = Field(
        None, description="serve DHCP on this network (dnsmasq supervised by vnet); `true` for defaults"
    )
    dns: Annotated[DnsSpec | None, Before(_shorthand, accepts={"type": "boolean"})] = Field(
        None, description="serve DNS on this network (same dnsmasq); `true` for defaults"
    )
    forwards: list[ForwardSpec] = Field(default_factory=list, description="port forwards from the host (nat)")
    # IPv6 (dual stack): the same network's second family
    subnet6: Network6 | None = Field(
        None, description="IPv6 prefix of the network (host, nat, isolated), e.g. 2001:db8:77::/64; needs subnet"
    )
    address6: Address6 | None = Field(None, description="the bridge's IPv6 address (host, nat); default ::1 of subnet6")
    dhcp6: Annotated[bool | tuple[Address6, Address6], Before(_reject_none)] = Field(
        False, description="false: SLAAC (router advertisements, /64 only); true or [first, last]: stateful DHCPv6"
    )
    nat6: bool | None = Field(
        None, description="nat: masquerade IPv6 out of the uplink (default true); false routes subnet6 (the upstream must route it to the host)"
    )
    offload: bool | None = Field(
        None, description="nat: established TCP and UDP flows to and from the uplink take the kernel's nftables flowtable "
        "fast path where the kernel has one (default true); false keeps every packet on the forward chain"
    )
    overlay: OverlaySpec | None = Field(None, description="span every host of `hosts:` with a VXLAN tunnel")


class PortPolicy(Strict):
    """What a port on a bridge may do: the same for tap, netns endpoints and VM NICs."""

    isolated: bool = Field(False, description="talk only to the gateway (host), not to other ports of the bridge")
    spoofing: Literal["deny", "allow"] = Field(
        "deny", description="deny: drop frames whose source MAC/IPv4 is not the port's own, and DHCP server replies"
    )
    rate: Annotated[str, After(_rate)] | None = Field(None, description="rate limit each way, e.g. 100mbit")


class TapSpec(PortPolicy):
    kind: Literal["tap"]
    host: Name | None = Field(None, description="the host (of `hosts:`) this runs on; required when `hosts:` is given")
    network: Name | None = Field(None, description="network whose bridge the tap joins")
    ifname: IfName | None = Field(None, description="tap device name; default derived")
    mac: Mac | None = Field(None, description="the guest's MAC; default stable 52:54:00:… from names")
    owner: Principal | None = Field(None, description="user allowed to open the tap (QEMU's user)")
    group: Principal | None = Field(None, description="group allowed to open the tap")


class TunSpec(Strict):
    kind: Literal["tun"]
    host: Name | None = Field(None, description="the host (of `hosts:`) this runs on; required when `hosts:` is given")
    ifname: IfName | None = None
    address: Interface | None = Field(None, description="address with prefix on the tun device")
    owner: Principal | None = None
    group: Principal | None = None


def _address_dhcp(data: object) -> object:
    """`address: dhcp` is the DHCP client: the model keeps `address` a static address only, so
    nothing that reads it ever meets the word."""
    if isinstance(data, dict) and data.get("address") == "dhcp":
        data = {k: v for k, v in data.items() if k != "address"}
        if data.get("dhcp") is False:
            raise ValueError("address: dhcp and dhcp: false say opposite things; keep one")
        data["dhcp"] = True
    return data


class NetnsSpec(PortPolicy, before=_address_dhcp):
    kind: Literal["netns"]
    host: Name | None = Field(None, description="the host (of `hosts:`) this runs on; required when `hosts:` is given")
    network: Name = Field(description="network the endpoint attaches to")
    netns: Annotated[str, After(_name)] | None = Field(
        None, description="namespace name; default <topology>-<endpoint>; an existing one is borrowed"
    )
    own_netns: bool = Field(
        False, description="with netns: the namespace is vnet's all the same (made when missing, deleted on destroy), as `vnet adopt` takes it"
    )
    host_ifname: IfName | None = Field(None, description="the veth's end on the host (bridge port); default ve-<topology>-<endpoint>")
    ifname: IfName = Field("eth0", description="interface name inside the namespace")
    address: Interface | None = Field(
        None, description="address with prefix; `dhcp`: vnet runs a DHCP client in the namespace; omit: the link only"
    )
    dhcp: bool = Field(False, description="run vnet's supervised DHCP client in the namespace (what `address: dhcp` says)")
    address6: Interface6 | None = Field(
        None, description="IPv6 address with prefix; omit to configure it by SLAAC or DHCPv6 (subnet6)"
    )
    mac: Mac | None = None


class MacvlanSpec(Strict, before=_address_dhcp):
    """An interface of its own on a host NIC (its own MAC on the LAN), moved into a namespace."""

    kind: Literal["macvlan"]
    uplink: IfName = Field(description="the host NIC the macvlan sits on, e.g. eth0")
    mode: Literal["bridge", "private", "vepa"] = Field(
        "bridge", description="bridge: macvlans on the NIC talk to each other directly; private: never; vepa: through the switch"
    )
    netns: Annotated[str, After(_name)] | None = Field(
        None, description="namespace name; default <topology>-<endpoint>; an existing one is borrowed"
    )
    ifname: IfName = Field("eth0", description="interface name inside the namespace")
    address: Interface | None = Field(None, description="address with prefix; `dhcp`: vnet runs a DHCP client; omit: the link only")
    gateway: Address | None = Field(None, description="default route via this address (with a static address)")
    dhcp: bool = Field(False, description="run vnet's supervised DHCP client in the namespace (what `address: dhcp` says)")
    host: Name | None = Field(None, description="the host (of `hosts:`) this runs on; required when `hosts:` is given")
    mac: Mac | None = None


Endpoint = Annotated[TapSpec | TunSpec | NetnsSpec | MacvlanSpec, Tagged("kind")]


class VmNic(PortPolicy):
    network: Name
    address: Address | None = Field(None, description="reserve this address for the NIC in the network's DHCP")
    mac: Mac | None = Field(None, description="default: 52:54:00 + a hash of topology, VM and NIC")
    ifname: IfName | None = Field(None, description="tap name; default derived")


class VmSpec(Strict):
    image: Literal["tiny"] | None = Field(
        None, description="tiny: vnet's built-in test guest (Debian cloud kernel + busybox, DHCP client, command agent)"
    )
    kernel: FilePath | None = Field(
        None, description="path to a kernel to boot directly (with initrd, append); relative to the topology file"
    )
    initrd: FilePath | None = Field(None, description="path to an initrd; relative to the topology file")
    append: Annotated[str, After(_text)] | None = Field(None, description="kernel command line")
    disk: FilePath | None = Field(
        None, description="path to a disk image (qcow2 or raw) to boot from; relative to the topology file"
    )
    user: Principal | None = Field(
        None, description="unprivileged user QEMU runs as (name or uid); default vnet-qemu, which `make setup` creates"
    )
    allow_devices: bool = Field(False, description="allow kernel/initrd/disk to be device nodes such as /dev/sdb")
    memory: Annotated[str, After(_size)] = Field("256M", description="guest memory, e.g. 256M or 1G")
    cpus: int = Field(1, ge=1, le=64)
    accel: Literal["auto", "kvm", "tcg"] = Field("auto", description="auto: KVM where it works, else software")
    nics: list[VmNic] = Field(default_factory=list)
    host: Name | None = Field(None, description="the host (of `hosts:`) this runs on; required when `hosts:` is given")
    display: Annotated[str, Before(_display)] = Field(
        "none", description="none (default), vnc (a VNC server on 127.0.0.1, display number chosen by vnet and shown by "
        "`vnet status`), or vnc:N (display N, TCP port 5900 + N)"
    )


class Topology(Strict):
    name: Name = Field(description="topology name; prefixes what vnet names")
    hosts: dict[Name, Annotated[str, After(_host_address)]] = Field(
        default_factory=dict, description="every host the topology spans, name → underlay address"
    )
    networks: dict[Name, NetworkSpec] = Field(default_factory=dict)
    endpoints: dict[Name, Endpoint] = Field(default_factory=dict)
    vms: dict[Name, VmSpec] = Field(default_factory=dict)
    allow: list[AllowSpec] = Field(default_factory=list, description="traffic allowed between networks (default: none)")
    evpn: EvpnSpec | None = Field(None, description="BGP of the networks with overlay control: evpn (FRR run by vnet); default asn 65000")
