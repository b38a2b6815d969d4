"""Names and marks that vnet derives: interface names, namespace names, MACs, ownership marks.

Everything here is a pure function of the topology's names, so the same file always yields the
same kernel objects, and ownership can be recognised on the objects themselves.
"""

from __future__ import annotations

# SHA-256 from CPython's own module where it has one: the digests hashlib's gives, without hashlib
# loading OpenSSL (~3 ms of every start-up). vnet's modules take their digests from here.
try:
    from _sha256 import sha256  # Python 3.11
except ImportError:
    try:
        from _sha2 import sha256  # Python 3.12 and later
    except ImportError:
        from hashlib import sha256

IFNAMSIZ = 15  # kernel limit for interface names, in bytes, without the trailing NUL

MARK = "vnet"  # first field of every ownership mark (ifalias of links, comment of nft tables)
ROUTE_PROTO = 86  # protocol number vnet puts on the routes and addresses it adds (outside iproute2's list)


# --- DNS names (dnsconf renders them; validation checks them) ---

# Words dnsmasq reads as keywords, not as a host name, in a `dhcp-host=` line (`ignore` refuses the
# client, `infinite` is a lease time; `set:`/`tag:`/`id:` need a ':' that no vnet name has). A
# name equal to one of them is refused by validation: dnsmasq has no quoting to escape it.
DHCP_KEYWORDS = frozenset({"ignore", "infinite"})
GATEWAY_NAME = "gateway"  # the DNS name of a host or nat network's gateway: gateway.<domain>


def hostname(name: str) -> str:
    return name.replace("_", "-")  # topology names allow '_', DNS labels do not


def nic_hostname(vm_name: str, index: int) -> str:
    """A VM's first NIC answers to the VM's name, its others to name-<index>."""
    return hostname(vm_name) if index == 0 else f"{hostname(vm_name)}-{index}"


def _digest(*parts: str) -> str:
    return sha256("\0".join(parts).encode()).hexdigest()


def ifname(prefix: str, *parts: str) -> str:
    """`prefix-part1-part2` when it fits in IFNAMSIZ, else `prefix` plus a hash of the parts."""
    plain = "-".join((prefix, *parts)) if prefix else "-".join(parts)
    if len(plain.encode()) <= IFNAMSIZ:
        return plain
    return (prefix + _digest(*parts))[:IFNAMSIZ]


def bridge(topology: str, network: str) -> str:
    return ifname("vb", topology, network)


def tap(topology: str, endpoint: str) -> str:
    return ifname("vt", topology, endpoint)


def vm_tap(topology: str, vm: str, index: int) -> str:
    return ifname("vt", topology, f"{vm}{index}")


def vxlan(topology: str, network: str) -> str:
    """The VXLAN device that carries a network to the other hosts."""
    return ifname("vx", topology, network)


def service_netns(topology: str, network: str) -> str:
    """Namespace that serves DHCP/DNS on an isolated network, whose bridge has no host address."""
    return f"{topology}-svc-{network}"


def veth_host(topology: str, endpoint: str) -> str:
    return ifname("ve", topology, endpoint)


def endpoint_veth(topology: str, endpoint: str, given: str | None) -> str:
    """A netns endpoint's veth end on the host: the name the topology gives, else vnet's own."""
    return given or veth_host(topology, endpoint)


def netns(topology: str, endpoint: str) -> str:
    return f"{topology}-{endpoint}"


def endpoint_netns(topology: str, endpoint: str, given: str | None) -> str:
    """A netns endpoint's namespace: the one the topology names (borrowed), else vnet's own."""
    return given or netns(topology, endpoint)


def endpoint_tap(topology: str, endpoint: str, given: str | None) -> str:
    """A tap or tun endpoint's interface: the name the topology gives, else vnet's own."""
    return given or tap(topology, endpoint)


def mac(*parts: str, oui: str = "52:54:00") -> str:
    """A stable unicast MAC from names: the QEMU OUI and three bytes of a hash."""
    h = _digest(*parts)
    return f"{oui}:{h[0:2]}:{h[2:4]}:{h[4:6]}"


def local_mac(*parts: str) -> str:
    """A stable locally administered unicast MAC (02:…), for bridges and host-side veths."""
    h = _digest("local", *parts)
    return f"02:{h[0:2]}:{h[2:4]}:{h[4:6]}:{h[6:8]}:{h[8:10]}"


def tap_mac(guest_mac: str) -> str:
    """The host side of a VM's tap: the guest MAC with first byte fe, as libvirt does, so the
    bridge never adopts it and guest and host ends never collide."""
    return "fe" + guest_mac[2:]


def target_id(netns: str | None) -> str:
    """A short, fixed-size identity of a target namespace, for marks on global objects (named
    namespaces): what vnet made for one target is never taken for another's. '' for the namespace
    vnet runs in."""
    return _digest("target", netns)[:8] if netns else ""


def netns_mark(topology: str, name: str, target: str) -> str:
    """The mark on the `lo` of a namespace vnet makes, naming the target it was made for."""
    return link_mark(topology, "netns", name, *((target,) if target else ()))


def link_mark(topology: str, role: str, name: str, *extra: str) -> str:
    return ":".join((MARK, topology, role, name, *extra))


def parse_mark(alias: str | None) -> tuple[str, str, str, tuple[str, ...]] | None:
    """(topology, role, name, extra) of a vnet mark, or None for anything vnet did not mark."""
    if not alias:
        return None
    fields = alias.split(":")
    if len(fields) < 4 or fields[0] != MARK:
        return None
    return fields[1], fields[2], fields[3], tuple(fields[4:])


def digest_mark(topology: str, digest: str) -> str:
    """The mark on what vnet makes whole from a rendered text (nft tables, iptables rules)."""
    return f"{MARK}:{topology}:{digest}"


def parse_digest_mark(text: str | None) -> tuple[str, str] | None:
    """(topology, digest) of a digest mark, None for anything vnet did not make."""
    fields = (text or "").split(":")
    if len(fields) != 3 or fields[0] != MARK:
        return None
    return fields[1], fields[2]


def nft_table(topology: str) -> str:
    return f"vnet-{topology}"
