"""A small rtnetlink client: the requests vnet sends most, encoded and decoded by hand.

Why not pyroute2 for these: its 0.9 series runs an asyncio event loop per request and decodes
every attribute of every message; at a thousand endpoints that was most of vnet's time. Here a
request is one sendto and one recv, a dump decodes only the attributes vnet reads, and
`Rtnl.batch` sends many requests before reading their acknowledgements (what `ip -batch` cannot
do: it waits for each). pyroute2 stays for the rare, intricate messages (tc, nftables).
"""

from __future__ import annotations

import errno
import os
import _socket  # the C module under socket.py: socket.py's enum wrappers and selectors cost ~3 ms of every start-up, and vnet needs none of them
import struct
import threading

from vnet.values import Record

TYPE_CHECKING = False  # as typing's, without importing typing before the head start's fork (values.py)
if TYPE_CHECKING:
    from typing import Any, Callable, Iterator

    Fields = dict[int, Callable[[Any, memoryview], None]]

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12

# message types
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_GETQDISC = 38

# flags
F_REQUEST, F_ACK = 0x1, 0x4
F_DUMP = 0x300
F_REPLACE, F_EXCL, F_CREATE = 0x100, 0x200, 0x400

# attributes
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_GROUP, IFLA_NET_NS_FD = 18, 20, 27, 28
IFLA_EXT_MASK = 29
RTEXT_FILTER_SKIP_STATS = 1 << 3  # a dump without each link's counters (kernel 4.20+; older ones ignore it)
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_INFO_SLAVE_DATA = 5
IFLA_BRPORT_MODE = 4  # a bridge port's hairpin mode (u8)
VETH_INFO_PEER = 1
IFLA_TUN_OWNER, IFLA_TUN_GROUP, IFLA_TUN_TYPE, IFLA_TUN_MULTI_QUEUE = 1, 2, 3, 7
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_CACHEINFO, IFA_FLAGS, IFA_PROTO = 1, 2, 4, 6, 8, 11
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_METRICS, RTA_CACHEINFO, RTA_TABLE, RTA_PREF, RTA_EXPIRES = 1, 4, 5, 6, 7, 8, 12, 15, 20, 23
USER_HZ = 100  # the unit of rta_cacheinfo.rta_expires
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_TBF_PARMS, TCA_TBF_RATE64 = 1, 4
NLMSGERR_ATTR_MSG = 1

IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
RTN_UNICAST = 1
RTNH_F_ONLINK = 4
IFA_F_NODAD, IFA_F_PERMANENT = 0x02, 0x80
INFINITY_LIFE = 0xFFFFFFFF
AF_UNSPEC, AF_INET, AF_INET6 = _socket.AF_UNSPEC, _socket.AF_INET, _socket.AF_INET6

_HDR = struct.Struct("=IHHII")
_ATTR = struct.Struct("=HH")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_TCMSG = struct.Struct("=BxxxiIII")
_U32 = struct.Struct("=I")


class RtnlError(OSError):
    """The kernel refused a request: errno in .code (and .errno), its extended-ack text if any."""

    def __init__(self, code: int, detail: str = ""):
        text = os.strerror(code) + (f" ({detail})" if detail else "")
        super().__init__(code, text)
        self.code = code


# --- encoding ------------------------------------------------------------------------------------


def _pad(n: int) -> int:
    return (n + 3) & ~3


def _pad_bytes(b: bytes) -> bytes:
    return b + b"\0" * (_pad(len(b)) - len(b))


def attr(kind: int, payload: bytes) -> bytes:
    return _pad_bytes(_ATTR.pack(_ATTR.size + len(payload), kind) + payload)


def a_u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def a_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def a_mac(kind: int, mac: str) -> bytes:
    return attr(kind, bytes.fromhex(mac.replace(":", "")))


def family_of(address: str) -> int:
    return AF_INET6 if ":" in address else AF_INET


def a_ip(kind: int, address: str) -> bytes:
    """An IPv4 or IPv6 address, by its spelling."""
    return attr(kind, _socket.inet_pton(family_of(address), address))


def ifinfo(index: int = 0, up: bool | None = None) -> bytes:
    flags, change = (0, 0) if up is None else (IFF_UP if up else 0, IFF_UP)
    return _IFINFO.pack(_socket.AF_UNSPEC, 0, index, flags, change)


def encode(*fields: tuple[Callable[[int, Any], bytes], int, Any]) -> bytes:
    """The attributes that have a value, in order: (encoder, type, value); None leaves one out."""
    return b"".join(enc(kind, value) for enc, kind, value in fields if value is not None)


def link_attrs(ifname: str | None = None, mac: str | None = None, mtu: int | None = None, master: int | None = None, alias: str | None = None,
               group: int | None = None) -> bytes:
    return encode((a_u32, IFLA_GROUP, group), (a_str, IFLA_IFNAME, ifname), (a_mac, IFLA_ADDRESS, mac or None),
                  (a_u32, IFLA_MTU, mtu or None), (a_u32, IFLA_MASTER, master), (a_str, IFLA_IFALIAS, alias))


# --- decoding ------------------------------------------------------------------------------------


def attrs(buf: bytes | memoryview, offset: int, end: int) -> Iterator[tuple[int, memoryview]]:
    mv = memoryview(buf)
    while offset + 4 <= end:
        n, kind = _ATTR.unpack_from(mv, offset)
        if n < 4:
            break
        yield kind & 0x3FFF, mv[offset + 4 : offset + n]  # without NLA_F_NESTED / NET_BYTEORDER
        offset += _pad(n)


def _walk(buf: memoryview, offset: int, path: tuple[int | None, ...]) -> Iterator[memoryview]:
    """Payloads of the attributes reached by following path (attribute types, None for any) down
    through nested attributes."""
    if not path:
        yield buf
        return
    for kind, v in attrs(buf, offset, len(buf)):
        if path[0] is None or kind == path[0]:
            yield from _walk(v, 0, path[1:])


def _str(v: memoryview) -> str:
    return bytes(v).split(b"\0", 1)[0].decode(errors="replace")


def _mac(v: memoryview) -> str:
    return bytes(v).hex(":")


def _ip(v: memoryview) -> str:
    if len(v) >= 16:
        return _socket.inet_ntop(AF_INET6, v[:16])
    return _socket.inet_ntoa(v[:4])


class Link(Record):
    """A link as a netlink dump gives it: the attributes vnet reads."""

    __slots__ = ("index", "ifname", "flags", "alias", "master", "mac", "mtu", "kind", "group", "data")
    index: int
    ifname: str
    flags: int
    alias: str | None
    master: int | None
    mac: str | None
    mtu: int
    kind: str | None
    group: int
    data: dict  # tun: IFLA_TUN_* by name

    def __init__(self, index: int, ifname: str, flags: int, alias: str | None = None, master: int | None = None,
                 mac: str | None = None, mtu: int = 0, kind: str | None = None, group: int = 0, data: dict | None = None) -> None:
        self.index = index
        self.ifname = ifname
        self.flags = flags
        self.alias = alias
        self.master = master
        self.mac = mac
        self.mtu = mtu
        self.kind = kind
        self.group = group
        self.data = {} if data is None else data

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


_TUN_NAMES = {IFLA_TUN_OWNER: "IFLA_TUN_OWNER", IFLA_TUN_GROUP: "IFLA_TUN_GROUP", IFLA_TUN_TYPE: "IFLA_TUN_TYPE", IFLA_TUN_MULTI_QUEUE: "IFLA_TUN_MULTI_QUEUE"}


def _u32(v: memoryview) -> int:
    return _U32.unpack_from(v)[0]


def _set(name: str, conv: Callable[[memoryview], Any]) -> Callable[[Any, memoryview], None]:
    return lambda obj, v: setattr(obj, name, conv(v))




def _fields(table: Fields) -> Fields:
    """A table of attribute handlers that also answers to each type with its flags set
    (NLA_F_NESTED, NLA_F_NET_BYTEORDER), so that `_decode` tests each attribute once."""
    return {kind | flags: handler for kind, handler in table.items() for flags in (0, 0x4000, 0x8000, 0xC000)}


def _decode(obj: Any, msg: memoryview, offset: int, fields: Fields) -> Any:
    """Set obj's fields from the attributes the table (made by `_fields`) names; every other
    attribute is skipped. (The loop of `attrs`, inlined: a link message carries some fifty
    attributes, a thousand-link dump fifty thousand, and a generator step for each was most of a
    dump's cost.)"""
    end = len(msg)
    unpack = _ATTR.unpack_from
    while offset + 4 <= end:
        n, kind = unpack(msg, offset)
        if n < 4:
            break
        # `in`, not a call of fields.get: most attributes are skipped, and the test is per attribute
        if kind in fields:
            fields[kind](obj, msg[offset + 4 : offset + n])
        offset += (n + 3) & ~3
    return obj


def _find(v: memoryview, want: int) -> memoryview | None:
    """The payload of the first attribute of type `want` in v (a loop, not a generator: a bridge
    port's IFLA_INFO_SLAVE_DATA carries some forty attributes, and every port of a thousand-link
    dump is scanned for one of them)."""
    end = len(v)
    unpack = _ATTR.unpack_from
    offset = 0
    while offset + 4 <= end:
        n, kind = unpack(v, offset)
        if n < 4:
            break
        if kind & 0x3FFF == want:
            return v[offset + 4 : offset + n]
        offset += (n + 3) & ~3
    return None


def _link_info(link: Link, v: memoryview) -> None:
    data = slave = None
    end, offset, unpack = len(v), 0, _ATTR.unpack_from
    while offset + 4 <= end:  # a handful: kind, data, a port's settings (the loop of `attrs`, inlined)
        n, kind = unpack(v, offset)
        if n < 4:
            break
        kind &= 0x3FFF
        if kind == IFLA_INFO_KIND:
            link.kind = _str(v[offset + 4 : offset + n])
        elif kind == IFLA_INFO_DATA:
            data = v[offset + 4 : offset + n]
        elif kind == IFLA_INFO_SLAVE_DATA:  # a bridge port's settings
            slave = v[offset + 4 : offset + n]
        offset += (n + 3) & ~3
    if slave is not None:
        mode = _find(slave, IFLA_BRPORT_MODE)
        if mode is not None and len(mode) >= 1:
            link.data["hairpin"] = bool(mode[0])
    if data is not None and link.kind in ("macvlan", "macvtap"):
        for kind, mv in attrs(data, 0, len(data)):
            if kind == IFLA_MACVLAN_MODE and len(mv) >= 4:
                link.data["IFLA_MACVLAN_MODE"] = _u32(mv)
    if data is not None and link.kind == "tun":
        for kind, tv in attrs(data, 0, len(data)):
            if kind in _TUN_NAMES:
                link.data[_TUN_NAMES[kind]] = _u32(tv) if len(tv) >= 4 else tv[0]
    elif data is not None and link.kind == "vxlan":
        link.data.update(parse_vxlan(data))


_LINK_FIELDS = _fields({
    IFLA_IFNAME: _set("ifname", _str),
    IFLA_IFALIAS: _set("alias", _str),
    IFLA_MASTER: _set("master", lambda v: _u32(v) or None),
    IFLA_ADDRESS: _set("mac", _mac),
    IFLA_MTU: _set("mtu", _u32),
    IFLA_GROUP: _set("group", _u32),
    IFLA_LINKINFO: _link_info,
})


def parse_link(msg: memoryview) -> Link:
    _, _, index, flags, _ = _IFINFO.unpack_from(msg, 16)
    return _decode(Link(index, "", flags), msg, 16 + _IFINFO.size, _LINK_FIELDS)


class Addr(Record):
    """An address as a netlink dump gives it."""

    __slots__ = ("index", "prefixlen", "address", "local", "broadcast", "proto", "family", "flags", "scope", "preferred", "valid")
    index: int
    prefixlen: int
    address: str | None
    local: str | None
    broadcast: str | None
    proto: int
    family: int
    flags: int  # IFA_F_*: permanent, nodad, mngtmpaddr, noprefixroute …
    scope: int
    preferred: int  # seconds left (IPv6 addresses from router advertisements)
    valid: int

    def __init__(self, index: int, prefixlen: int, address: str | None = None, local: str | None = None,
                 broadcast: str | None = None, proto: int = 0, family: int = AF_INET, flags: int = 0, scope: int = 0,
                 preferred: int = INFINITY_LIFE, valid: int = INFINITY_LIFE) -> None:
        self.index = index
        self.prefixlen = prefixlen
        self.address = address
        self.local = local
        self.broadcast = broadcast
        self.proto = proto
        self.family = family
        self.flags = flags
        self.scope = scope
        self.preferred = preferred
        self.valid = valid


def _cacheinfo(a: Addr, v: memoryview) -> None:
    a.preferred, a.valid = struct.unpack_from("=II", v)


_ADDR_FIELDS = _fields({
    IFA_ADDRESS: _set("address", _ip),
    IFA_LOCAL: _set("local", _ip),
    IFA_BROADCAST: _set("broadcast", _ip),
    IFA_PROTO: _set("proto", lambda v: v[0]),
    IFA_FLAGS: _set("flags", _u32),
    IFA_CACHEINFO: _cacheinfo,
})


def parse_addr(msg: memoryview) -> Addr:
    family, prefixlen, flags, scope, index = _IFADDR.unpack_from(msg, 16)
    return _decode(Addr(index, prefixlen, family=family, flags=flags, scope=scope), msg, 16 + _IFADDR.size, _ADDR_FIELDS)


class Route(Record):
    """A route as a netlink dump gives it."""

    __slots__ = ("dst_len", "table", "proto", "scope", "type", "dst", "gateway", "oif", "priority", "prefsrc",
                 "flags", "family", "pref", "metrics", "expires")
    dst_len: int
    table: int
    proto: int
    scope: int
    type: int
    dst: str | None
    gateway: str | None
    oif: int | None
    priority: int | None
    prefsrc: str | None
    flags: int  # RTNH_F_ONLINK and the like
    family: int
    pref: int | None  # IPv6 router preference
    metrics: bytes | None  # RTA_METRICS as the kernel sent it (hop limit, MTU …)
    expires: int | None  # seconds left, for an IPv6 route that expires (router advertisements)

    def __init__(self, dst_len: int, table: int, proto: int, scope: int, type: int, dst: str | None = None,
                 gateway: str | None = None, oif: int | None = None, priority: int | None = None, prefsrc: str | None = None,
                 flags: int = 0, family: int = AF_INET, pref: int | None = None, metrics: bytes | None = None,
                 expires: int | None = None) -> None:
        self.dst_len = dst_len
        self.table = table
        self.proto = proto
        self.scope = scope
        self.type = type
        self.dst = dst
        self.gateway = gateway
        self.oif = oif
        self.priority = priority
        self.prefsrc = prefsrc
        self.flags = flags
        self.family = family
        self.pref = pref
        self.metrics = metrics
        self.expires = expires


def _route_cacheinfo(rt: Route, v: memoryview) -> None:
    expires = struct.unpack_from("=i", v, 8)[0]
    rt.expires = max(1, expires // USER_HZ) if expires > 0 else None


_ROUTE_FIELDS = _fields({
    RTA_DST: _set("dst", _ip),
    RTA_GATEWAY: _set("gateway", _ip),
    RTA_OIF: _set("oif", _u32),
    RTA_PRIORITY: _set("priority", _u32),
    RTA_PREFSRC: _set("prefsrc", _ip),
    RTA_TABLE: _set("table", _u32),
    RTA_PREF: _set("pref", lambda v: v[0]),
    RTA_METRICS: _set("metrics", bytes),
    RTA_CACHEINFO: _route_cacheinfo,
})


def parse_route(msg: memoryview) -> Route:
    family, dst_len, _, _, table, proto, scope, rtype, flags = _RTMSG.unpack_from(msg, 16)
    return _decode(Route(dst_len, table, proto, scope, rtype, flags=flags, family=family), msg, 16 + _RTMSG.size, _ROUTE_FIELDS)


class Qdisc(Record):
    """A qdisc as a netlink dump gives it (with tbf's rate where it is one)."""

    __slots__ = ("index", "parent", "kind", "tbf_rate")
    index: int
    parent: int
    kind: str | None
    tbf_rate: int | None  # bytes per second

    def __init__(self, index: int, parent: int, kind: str | None = None, tbf_rate: int | None = None) -> None:
        self.index = index
        self.parent = parent
        self.kind = kind
        self.tbf_rate = tbf_rate


def _qdisc_options(q: Qdisc, v: memoryview) -> None:
    if q.kind != "tbf":  # TCA_KIND comes first
        return
    for ok, ov in attrs(v, 0, len(v)):
        if ok == TCA_TBF_RATE64:
            q.tbf_rate = struct.unpack_from("=Q", ov)[0]
        elif ok == TCA_TBF_PARMS and q.tbf_rate is None:
            q.tbf_rate = _U32.unpack_from(ov, 8)[0]  # tc_ratespec.rate


_QDISC_FIELDS = _fields({TCA_KIND: _set("kind", _str), TCA_OPTIONS: _qdisc_options})


def parse_qdisc(msg: memoryview) -> Qdisc:
    _, index, _, parent, _ = _TCMSG.unpack_from(msg, 16)
    return _decode(Qdisc(index, parent), msg, 16 + _TCMSG.size, _QDISC_FIELDS)


# --- VXLAN devices and their forwarding database ------------------------------------------------

IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT, IFLA_VXLAN_LOCAL6 = 1, 4, 7, 15, 17
IFLA_VXLAN_UDP_CSUM = 18
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NDA_DST, NDA_LLADDR = 1, 2
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NTF_SELF = 0x02
F_APPEND = 0x800
AF_BRIDGE = 7
_NDMSG = struct.Struct("=BxxxiHBB")
ZERO_MAC = "00:00:00:00:00:00"


def parse_vxlan(data: memoryview) -> dict:
    """A vxlan link's VNI, UDP port, local address and learning flag, by name."""
    out: dict = {}
    for kind, v in attrs(data, 0, len(data)):
        if kind == IFLA_VXLAN_ID:
            out["vni"] = _u32(v)
        elif kind == IFLA_VXLAN_PORT:
            out["port"] = struct.unpack_from("!H", v)[0]
        elif kind == IFLA_VXLAN_LOCAL:
            out["local"] = _ip(v)
        elif kind == IFLA_VXLAN_LOCAL6:
            out["local"] = _socket.inet_ntop(_socket.AF_INET6, bytes(v[:16]))
        elif kind == IFLA_VXLAN_LEARNING:
            out["learning"] = bool(v[0])
    return out


def _inet(address: str) -> tuple[int, bytes]:
    family = _socket.AF_INET6 if ":" in address else _socket.AF_INET
    return family, _socket.inet_pton(family, address)


def vxlan_data(vni: int, local: str, port: int, learning: bool = False) -> bytes:
    """IFLA_INFO_DATA of `ip link add … type vxlan id VNI local ADDR dstport PORT [no]learning`."""
    family, packed = _inet(local)
    data = (a_u32(IFLA_VXLAN_ID, vni) + attr(IFLA_VXLAN_LOCAL6 if family == _socket.AF_INET6 else IFLA_VXLAN_LOCAL, packed)
            + attr(IFLA_VXLAN_PORT, struct.pack("!H", port)) + attr(IFLA_VXLAN_LEARNING, bytes([int(learning)])))
    if family == _socket.AF_INET:
        # RFC 7348: over IPv4 the outer UDP checksum SHOULD be zero (the inner frame carries its
        # own); the kernel computes one unless told (`noudpcsum`). Over IPv6 a zero checksum needs
        # both ends to allow it (RFC 6935), so the kernel's default stays.
        data += attr(IFLA_VXLAN_UDP_CSUM, b"\0")
    return data


def _fdb_body(index: int, mac: str, dst: str | None) -> bytes:
    body = _NDMSG.pack(AF_BRIDGE, index, NUD_NOARP | NUD_PERMANENT, NTF_SELF, 0) + a_mac(NDA_LLADDR, mac)
    if dst:
        body += attr(NDA_DST, _inet(dst)[1])
    return body


def fdb_append(index: int, dst: str, mac: str = ZERO_MAC) -> tuple[int, int, bytes]:
    """`bridge fdb append MAC dev VXLAN dst DST`: all-zero MAC entries are the flood list."""
    return RTM_NEWNEIGH, F_CREATE | F_APPEND, _fdb_body(index, mac, dst)


def fdb_del(index: int, dst: str, mac: str = ZERO_MAC) -> tuple[int, int, bytes]:
    return RTM_DELNEIGH, 0, _fdb_body(index, mac, dst)


class Fdb(Record):
    """A bridge forwarding-database entry as a netlink dump gives it."""

    __slots__ = ("index", "mac", "dst", "state", "flags")
    index: int
    mac: str | None
    dst: str | None
    state: int
    flags: int

    def __init__(self, index: int, mac: str | None = None, dst: str | None = None, state: int = 0, flags: int = 0) -> None:
        self.index = index
        self.mac = mac
        self.dst = dst
        self.state = state
        self.flags = flags


def parse_fdb(msg: memoryview) -> Fdb:
    _, index, state, flags, _ = _NDMSG.unpack_from(msg, 16)
    e = Fdb(index, state=state, flags=flags)
    for kind, v in attrs(msg, 16 + _NDMSG.size, len(msg)):
        if kind == NDA_LLADDR:
            e.mac = _mac(v)
        elif kind == NDA_DST:
            e.dst = _socket.inet_ntop(_socket.AF_INET6 if len(v) == 16 else _socket.AF_INET, bytes(v))
    return e


# --- the socket ----------------------------------------------------------------------------------


IN_FLIGHT = 64  # requests sent before their acknowledgements are read
NLM_F_DUMP_INTR = 0x10
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # on an error: the request's header only; TLVs follow
_local = threading.local()


def _buffer() -> bytearray:
    """One receive buffer per thread, shared by its sockets (a thousand namespaces mean a thousand
    sockets; a buffer each would be a quarter of a GiB). A dump's datagrams stay under 32 KiB."""
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(1 << 18)
    return buf


class Netlink:
    """One netlink socket (opened in the namespace it acts on): requests, batches, dumps."""

    def __init__(self, sock: _socket.socket | None = None):
        self.sock = sock or _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 1 << 20)
        for opt in (NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            try:
                self.sock.setsockopt(SOL_NETLINK, opt, 1)
            except OSError:
                pass
        self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def _message(self, mtype: int, flags: int, body: bytes) -> tuple[int, bytes]:
        """(sequence number, the request) with the next sequence number."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq, _HDR.pack(_HDR.size + len(body), mtype, flags | F_REQUEST, self._seq, 0) + body

    def _send(self, mtype: int, flags: int, body: bytes) -> int:
        seq, msg = self._message(mtype, flags, body)
        self.sock.send(msg)
        return seq

    def _results(self, seqs: dict[int, int]) -> list[RtnlError | None]:
        """The acknowledgement of each request sent, by sequence number → its place in the list."""
        results: list[RtnlError | None] = [None] * len(seqs)
        for mtype, _, seq, msg in self._messages():
            if mtype == NLMSG_ERROR and seq in seqs:
                results[seqs.pop(seq)] = self._error(msg)
                if not seqs:
                    break
        return results

    def _messages(self) -> Iterator[tuple[int, int, int, memoryview]]:
        """(type, flags, seq, whole message) of each message received, one datagram at a time."""
        while True:
            buf = _buffer()
            n = self.sock.recv_into(buf)
            data = memoryview(buf)[:n]  # valid until this thread's next receive: callers decode at once
            off = 0
            while off + _HDR.size <= len(data):
                n, mtype, flags, seq, _ = _HDR.unpack_from(data, off)
                if n < _HDR.size:
                    break
                yield mtype, flags, seq, data[off : off + n]
                off += _pad(n)

    @staticmethod
    def _error(msg: memoryview) -> RtnlError | None:
        code = -struct.unpack_from("=i", msg, 16)[0]
        if code == 0:
            return None
        detail = ""
        # with NETLINK_EXT_ACK the original request follows (header only when capped), then TLVs
        flags = _HDR.unpack_from(msg, 0)[2]
        inner_len = _HDR.unpack_from(msg, 20)[0]
        start = 20 + (_HDR.size if flags & NLM_F_CAPPED else _pad(inner_len))
        for kind, v in attrs(msg, start, len(msg)) if flags & NLM_F_ACK_TLVS else ():
            if kind == NLMSGERR_ATTR_MSG:
                detail = _str(v)
        return RtnlError(code, detail)

    def request(self, mtype: int, flags: int, body: bytes) -> None:
        """One change, acknowledged: raises RtnlError when the kernel refuses it."""
        err = self.batch([(mtype, flags, body)])[0]
        if err is not None:
            raise err

    def batch(self, requests: list[tuple[int, int, bytes]]) -> list[RtnlError | None]:
        """Send requests, then read their acknowledgements: one round trip for many changes.
        The kernel runs them in order; each gets its own result (None or the error). At most
        IN_FLIGHT are sent before their acknowledgements are read: unread acknowledgements fill
        the socket's receive buffer (rmem_max caps it), and the kernel drops what does not fit."""
        out: list[RtnlError | None] = []
        for start in range(0, len(requests), IN_FLIGHT):
            chunk = requests[start : start + IN_FLIGHT]
            out += self._results({self._send(t, f | F_ACK, b): i for i, (t, f, b) in enumerate(chunk)})
        return out

    def dump(self, mtype: int, body: bytes) -> list[memoryview]:
        """Every message of a dump, copied out of the receive buffer. A dump the kernel flags as
        interrupted (the table changed while it was read) is read again."""
        for _ in range(5):
            msgs, interrupted = self._dump_once(mtype, body)
            if not interrupted:
                return msgs
        raise RtnlError(errno.EAGAIN, "the kernel kept changing the table while it was read")

    def _dump_once(self, mtype: int, body: bytes) -> tuple[list[memoryview], bool]:
        """(The loop of `_messages`, inlined, and one copy per datagram rather than per message:
        observing makes some two thousand dumps, most of them a datagram of a few messages.)"""
        seq = self._send(mtype, F_DUMP, body)
        msgs: list[memoryview] = []
        interrupted = False
        recv_into, buf, unpack = self.sock.recv_into, _buffer(), _HDR.unpack_from
        while True:
            data = memoryview(bytes(memoryview(buf)[: recv_into(buf)]))  # the messages outlive the buffer
            end, off = len(data), 0
            while off + 16 <= end:
                n, t, flags, s, _ = unpack(data, off)
                if n < 16:
                    break
                if s == seq:
                    interrupted |= bool(flags & NLM_F_DUMP_INTR)
                    msg = data[off : off + n]
                    if t == NLMSG_DONE:
                        code = -struct.unpack_from("=i", msg, 16)[0] if n >= 20 else 0
                        if code and code != errno.ENOENT:  # ENOENT: nothing to dump (e.g. no main table yet)
                            raise RtnlError(code, "dump failed")
                        return msgs, interrupted
                    if t == NLMSG_ERROR:
                        err = self._error(msg)
                        if err is not None:
                            raise err
                        return msgs, interrupted
                    msgs.append(msg)
                off += (n + 3) & ~3


class Rtnl(Netlink):
    """The rtnetlink requests vnet makes."""

    def links(self) -> list[Link]:
        return [parse_link(m) for m in self.dump(RTM_GETLINK, ifinfo() + a_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS))]

    def link(self, ifname: str) -> Link | None:
        return self._get_link(ifinfo() + a_str(IFLA_IFNAME, ifname))

    def link_by_index(self, index: int) -> Link | None:
        return self._get_link(ifinfo(index))

    def _get_link(self, body: bytes) -> Link | None:
        seq = self._send(RTM_GETLINK, 0, body)
        for t, _, s, msg in self._messages():
            if s != seq:
                continue
            if t == NLMSG_ERROR:
                err = self._error(msg)
                if err is not None and err.code == errno.ENODEV:
                    return None
                raise err or RtnlError(errno.EPROTO, "no answer")
            return parse_link(msg)
        return None

    def addrs(self, index: int = 0, family: int = _socket.AF_UNSPEC) -> list[Addr]:
        """Addresses of both families, or of one (of one link with strict checking, else all)."""
        return [a for a in (parse_addr(m) for m in self.dump(RTM_GETADDR, _IFADDR.pack(family, 0, 0, 0, index))) if not index or a.index == index]

    def routes(self, table: int = 0, proto: int = 0, family: int = AF_INET) -> list[Route]:
        """Routes of one family (IPv4 unless asked), or of both IPv4 and IPv6 in one dump
        (AF_UNSPEC: the kernel dumps each family in turn, multicast and MPLS ones left out here);
        the kernel filters by table and protocol when asked (strict checking)."""
        body = _RTMSG.pack(family, 0, 0, 0, table if table < 256 else 0, proto, 0, 0, 0)
        if table >= 256:
            body += a_u32(RTA_TABLE, table)
        families = (AF_INET, AF_INET6) if family == AF_UNSPEC else (family,)
        return [
            r for r in (parse_route(m) for m in self.dump(RTM_GETROUTE, body))
            if r.family in families and (not table or r.table == table) and (not proto or r.proto == proto)
        ]

    def fdb(self, index: int) -> list[Fdb]:
        """The forwarding database entries of one device (a bridge port: the kernel filters by it)."""
        return [e for e in (parse_fdb(m) for m in self.dump(RTM_GETNEIGH, _NDMSG.pack(AF_BRIDGE, index, 0, 0, 0))) if e.index == index]

    def all_addresses(self) -> list[tuple[int, str]]:
        """(ifindex, address) of every IPv4 and IPv6 address."""
        out = []
        for m in self.dump(RTM_GETADDR, _IFADDR.pack(_socket.AF_UNSPEC, 0, 0, 0, 0)):
            family, _, _, _, index = _IFADDR.unpack_from(m, 16)
            for kind, v in attrs(m, 16 + _IFADDR.size, len(m)):
                if kind == (IFA_LOCAL if family == _socket.AF_INET else IFA_ADDRESS):
                    out.append((index, _socket.inet_ntop(family, bytes(v))))
                    break
        return out

    def qdiscs(self, kind: str | None = None) -> list[Qdisc]:
        """Every qdisc of the namespace, or those of one kind: a message without that kind's
        TCA_KIND attribute anywhere in its bytes is not decoded (a host with a thousand ports
        has a thousand default qdiscs, and vnet looks for its few tbf ones)."""
        msgs = self.dump(RTM_GETQDISC, _TCMSG.pack(_socket.AF_UNSPEC, 0, 0, 0, 0))
        if kind is None:
            return [parse_qdisc(m) for m in msgs]
        mark = a_str(TCA_KIND, kind)
        return [q for q in (parse_qdisc(m) for m in msgs if mark in bytes(m)) if q.kind == kind]


# --- nftables (nfnetlink): what observing needs, without the `nft` command -----------------------

NETLINK_NETFILTER = 12
NFT_SUBSYS = 10 << 8
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_GETRULE, NFT_MSG_GETSETELEM, NFT_MSG_NEWFLOWTABLE = 0, 1, 7, 13, 22
NFNL_MSG_BATCH_BEGIN = 0x10
NFTA_FLOWTABLE_TABLE, NFTA_FLOWTABLE_NAME, NFTA_FLOWTABLE_HOOK = 1, 2, 3
NFTA_FLOWTABLE_HOOK_NUM, NFTA_FLOWTABLE_HOOK_PRIORITY = 1, 2
NF_NETDEV_INGRESS = 0
NFPROTO_INET = 1
NFTA_TABLE_NAME, NFTA_TABLE_USERDATA = 1, 6
NFTA_RULE_TABLE = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE = 1, 1  # inside each NFTA_LIST_ELEM
NFPROTO_INET = 1
_NFGEN = struct.Struct("=BBH")


class Nft(Netlink):
    """Table names and comments, rule counts and one set's elements, read over nfnetlink."""

    def tables(self) -> list[tuple[int, str, bytes | None]]:
        """(family, name, userdata) of every table."""
        out = []
        for m in self.dump(NFT_SUBSYS | NFT_MSG_GETTABLE, _NFGEN.pack(0, 0, 0)):
            name, userdata = "", None
            for kind, v in attrs(m, 20, len(m)):
                if kind == NFTA_TABLE_NAME:
                    name = _str(v)
                elif kind == NFTA_TABLE_USERDATA:
                    userdata = bytes(v)
            out.append((m[16], name, userdata))
        return out

    def rule_counts(self) -> dict[tuple[int, str], int]:
        counts: dict[tuple[int, str], int] = {}
        for m in self.dump(NFT_SUBSYS | NFT_MSG_GETRULE, _NFGEN.pack(0, 0, 0)):
            for kind, v in attrs(m, 20, len(m)):
                if kind == NFTA_RULE_TABLE:
                    key = (m[16], _str(v))
                    counts[key] = counts.get(key, 0) + 1
                    break
        return counts

    def validates(self, requests: list[tuple[int, int, bytes]]) -> list[RtnlError | None]:
        """Each nf_tables request's result in one transaction that the kernel checks and then
        throws away, as `nft --check` does: a batch without its end is validated and aborted, so
        nothing changes (a module the requests need may be loaded)."""
        begin = _HDR.pack(_HDR.size + _NFGEN.size, NFNL_MSG_BATCH_BEGIN, F_REQUEST, 0, 0) + _NFGEN.pack(0, 0, _socket.htons(NFT_SUBSYS >> 8))
        messages = [self._message(mtype, flags | F_ACK, body) for mtype, flags, body in requests]
        self.sock.send(b"".join(_pad_bytes(m) for m in [begin, *(msg for _, msg in messages)]))
        return self._results({seq: i for i, (seq, _) in enumerate(messages)})

    def flowtables(self) -> bool:
        """Whether this kernel offloads flows to an nftables flowtable (inet family), asked by a
        checked-and-discarded transaction that makes one in a throwaway table."""
        table = f"vnet-probe-{os.getpid()}"
        new_table = (NFT_SUBSYS | NFT_MSG_NEWTABLE, F_CREATE, _NFGEN.pack(NFPROTO_INET, 0, 0) + a_str(NFTA_TABLE_NAME, table))
        hook = attr(NFTA_FLOWTABLE_HOOK, attr(NFTA_FLOWTABLE_HOOK_NUM, struct.pack("!I", NF_NETDEV_INGRESS))
                    + attr(NFTA_FLOWTABLE_HOOK_PRIORITY, struct.pack("!i", 0)))
        new_flowtable = (NFT_SUBSYS | NFT_MSG_NEWFLOWTABLE, F_CREATE, _NFGEN.pack(NFPROTO_INET, 0, 0) + a_str(NFTA_FLOWTABLE_TABLE, table)
                         + a_str(NFTA_FLOWTABLE_NAME, "probe") + hook)
        try:
            return all(e is None for e in self.validates([new_table, new_flowtable]))
        except OSError:  # not allowed to ask (no CAP_NET_ADMIN), or no nf_tables at all
            return False

    def set_keys(self, family: int, table: str, name: str) -> list[bytes] | None:
        """The keys of a set's elements (None when the set does not exist)."""
        body = _NFGEN.pack(family, 0, 0) + a_str(NFTA_SET_ELEM_LIST_TABLE, table) + a_str(NFTA_SET_ELEM_LIST_SET, name)
        try:
            msgs = self.dump(NFT_SUBSYS | NFT_MSG_GETSETELEM, body)
        except RtnlError as exc:
            if exc.code == errno.ENOENT:
                return None
            raise
        path = (NFTA_SET_ELEM_LIST_ELEMENTS, None, NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE)  # None: each NFTA_LIST_ELEM
        return [bytes(v) for m in msgs for v in _walk(m, 20, path)]


# --- request bodies ------------------------------------------------------------------------------


def new_link(ifname: str, kind: str, info_data: bytes = b"", **settings) -> tuple[int, int, bytes]:
    up = settings.pop("up", None)
    body = ifinfo(up=up) + link_attrs(ifname, **settings)
    info = a_str(IFLA_INFO_KIND, kind) + (attr(IFLA_INFO_DATA, info_data) if info_data else b"")
    return RTM_NEWLINK, F_CREATE | F_EXCL, body + attr(IFLA_LINKINFO, info)


def veth_peer(ifname: str, netns_fd: int | None = None, mac: str | None = None, mtu: int | None = None) -> bytes:
    peer = ifinfo() + link_attrs(ifname, mac=mac, mtu=mtu)
    if netns_fd is not None:
        peer += a_u32(IFLA_NET_NS_FD, netns_fd)
    return attr(VETH_INFO_PEER, peer)


IFLA_LINK = 5
IFLA_MACVLAN_MODE = 1
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}


def new_macvlan(ifname: str, lower: int, mode: str, netns_fd: int | None = None, mac: str | None = None,
                mtu: int | None = None) -> tuple[int, int, bytes]:
    """A macvlan on the link `lower` (an ifindex of the namespace the request is sent in), born in
    the namespace `netns_fd` names: the kernel checks its name there, not here."""
    body = ifinfo() + link_attrs(ifname, mac=mac, mtu=mtu) + a_u32(IFLA_LINK, lower)
    if netns_fd is not None:
        body += a_u32(IFLA_NET_NS_FD, netns_fd)
    info = a_str(IFLA_INFO_KIND, "macvlan") + attr(IFLA_INFO_DATA, a_u32(IFLA_MACVLAN_MODE, MACVLAN_MODES[mode]))
    return RTM_NEWLINK, F_CREATE | F_EXCL, body + attr(IFLA_LINKINFO, info)


def set_link(index: int = 0, ifname: str | None = None, up: bool | None = None, **settings) -> tuple[int, int, bytes]:
    """Change a link, found by index, or by name when index is 0 (no lookup first)."""
    return RTM_NEWLINK, 0, ifinfo(index, up) + link_attrs(ifname if not index else None, **settings)


def set_bridge_port(ifname: str, hairpin: bool) -> tuple[int, int, bytes]:
    """A bridge port's hairpin mode (`ip link set IF type bridge_slave hairpin on`); the link must
    be a port already: the kernel reads these settings with its master's rules."""
    slave = attr(IFLA_BRPORT_MODE, bytes([int(hairpin)]))
    return RTM_NEWLINK, 0, ifinfo() + link_attrs(ifname) + attr(IFLA_LINKINFO, attr(IFLA_INFO_SLAVE_DATA, slave))


def del_link(index: int = 0, ifname: str | None = None) -> tuple[int, int, bytes]:
    return RTM_DELLINK, 0, ifinfo(index) + (a_str(IFLA_IFNAME, ifname) if ifname and not index else b"")


def del_group(group: int) -> tuple[int, int, bytes]:
    """Every link of a link group, in one request: the kernel unregisters them as one batch, so
    the RCU grace periods a deletion waits for are waited for once, not once per link."""
    return RTM_DELLINK, 0, ifinfo() + a_u32(IFLA_GROUP, group)


def _addr_body(index: int, address: str, prefixlen: int, proto: int = 0, broadcast: str | None = None, local: str | None = None,
               flags: int = 0, lifetimes: tuple[int, int] | None = None) -> bytes:
    family = family_of(address)
    body = _IFADDR.pack(family, prefixlen, flags & 0xFF, 0, index)
    # IPv6 takes the address in IFA_LOCAL alone (an IFA_ADDRESS would name a peer)
    body += a_ip(IFA_LOCAL, local or address) + (a_ip(IFA_ADDRESS, address) if family == AF_INET else b"")
    if broadcast:
        body += a_ip(IFA_BROADCAST, broadcast)
    if flags > 0xFF:
        body += a_u32(IFA_FLAGS, flags)
    if lifetimes is not None:
        body += attr(IFA_CACHEINFO, struct.pack("=IIII", lifetimes[0], lifetimes[1], 0, 0))
    if proto:
        body += attr(IFA_PROTO, bytes([proto]))
    return body


def add_addr(index: int, address: str, prefixlen: int, proto: int = 0, broadcast: str | None = None, local: str | None = None,
             flags: int = 0, lifetimes: tuple[int, int] | None = None) -> tuple[int, int, bytes]:
    """An address; `flags` IFA_F_* (IPv6: nodad, mngtmpaddr …), `lifetimes` (preferred, valid)
    seconds for one that expires."""
    return RTM_NEWADDR, F_CREATE | F_EXCL, _addr_body(index, address, prefixlen, proto, broadcast, local, flags, lifetimes)


def del_addr(index: int, address: str, prefixlen: int) -> tuple[int, int, bytes]:
    return RTM_DELADDR, 0, _addr_body(index, address, prefixlen)


def _route_body(dst: str, dst_len: int, oif: int | None, gateway: str | None, proto: int, table: int, scope: int | None, priority: int | None, prefsrc: str | None, delete: bool, flags: int = 0,
                pref: int | None = None, metrics: bytes | None = None, expires: int | None = None) -> bytes:
    if scope is None:  # a delete matches any scope (RT_SCOPE_NOWHERE), as `ip route del` does
        scope = RT_SCOPE_NOWHERE if delete else RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
    family = family_of(dst) if dst_len or ":" in dst else family_of(gateway or dst)
    body = _RTMSG.pack(family, dst_len, 0, 0, table if table < 256 else 0, proto, scope, RTN_UNICAST, flags)
    return body + encode((a_u32, RTA_TABLE, table if table >= 256 else None), (a_ip, RTA_DST, dst if dst_len else None),
                         (a_u32, RTA_OIF, oif or None), (a_ip, RTA_GATEWAY, gateway or None),
                         (a_u32, RTA_PRIORITY, priority), (a_ip, RTA_PREFSRC, prefsrc or None),
                         (attr, RTA_METRICS, metrics or None), (lambda k, v: attr(k, bytes([v])), RTA_PREF, pref),
                         (a_u32, RTA_EXPIRES, expires))


def add_route(dst: str, dst_len: int, oif: int | None = None, gateway: str | None = None, proto: int = RTPROT_BOOT, table: int = RT_TABLE_MAIN,
              scope: int | None = None, priority: int | None = None, prefsrc: str | None = None, replace: bool = False, flags: int = 0,
              pref: int | None = None, metrics: bytes | None = None, expires: int | None = None) -> tuple[int, int, bytes]:
    """A route; IPv6 ones may carry a router preference, metrics and a lifetime (`expires`, seconds)."""
    nl_flags = F_CREATE | (F_REPLACE if replace else F_EXCL)
    return RTM_NEWROUTE, nl_flags, _route_body(dst, dst_len, oif, gateway, proto, table, scope, priority, prefsrc, False, flags, pref, metrics, expires)


def del_route(dst: str, dst_len: int, oif: int | None = None, gateway: str | None = None, proto: int = 0, table: int = RT_TABLE_MAIN) -> tuple[int, int, bytes]:
    return RTM_DELROUTE, 0, _route_body(dst, dst_len, oif, gateway, proto, table, None, None, None, True)
