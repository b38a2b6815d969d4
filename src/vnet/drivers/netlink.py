"""Links, addresses, routes, namespaces and the uplink move, through rtnetlink (pyroute2).

Each function does one resource's create, delete or update. A create that takes several netlink
requests removes what it made if a later request fails, so a step is all or nothing.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from vnet import names
from vnet.drivers.ns import Namespace, Namespaces
from vnet.drivers import ns as nsmod
from vnet.errors import VnetError
from vnet.resources import Resource, make

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
IFF_TUN, IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE = 0x0001, 0x0002, 0x1000, 0x0100
ENODEV, ENOENT, EEXIST, ESRCH, EADDRNOTAVAIL = 19, 2, 17, 3, 99


def index_of(ns: Namespace, ifname: str) -> int | None:
    # one RTM_GETLINK by name, not a dump of every link (link_lookup dumps: O(links) per call)
    try:
        (msg,) = ns.ipr.link("get", ifname=ifname)
    except NetlinkError as exc:
        if exc.code == ENODEV:
            return None
        raise
    return msg["index"]


def _index(ns: Namespace, ifname: str) -> int:
    idx = index_of(ns, ifname)
    if idx is None:
        raise VnetError(f"interface {ifname} not found in {ns.label}")
    return idx


def _make_tuntap(name: str, mode: str, owner: int | None, group: int | None, multi_queue: bool) -> None:
    # runs inside the target namespace (worker thread): the device is born there, no fork needed
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        flags = (IFF_TAP if mode == "tap" else IFF_TUN) | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
        if owner is not None:
            fcntl.ioctl(fd, TUNSETOWNER, owner)
        if group is not None:
            fcntl.ioctl(fd, TUNSETGROUP, group)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)


def _set_link(ns: Namespace, ifname: str, r: Resource, alias_key: str = "mark", mac_key: str = "mac", port: bool = True) -> None:
    """Alias, MAC, MTU, master and up in one request: one round trip per link."""
    idx = _index(ns, ifname)
    req: dict[str, Any] = {"ifalias": r.get(alias_key), "state": "up"}
    if r.get(mac_key):
        req["address"] = r.get(mac_key)
    if r.get("mtu"):
        req["mtu"] = r.get("mtu")
    if port and "master" in r.a:
        master = r.get("master")
        req["master"] = _index(ns, master) if master else 0
    ns.ipr.link("set", index=idx, **req)


def _delete_link(ns: Namespace, ifname: str) -> None:
    idx = index_of(ns, ifname)
    if idx is not None:
        ns.ipr.link("del", index=idx)


def _all_or_nothing(ns: Namespace, ifname: str, steps) -> None:
    try:
        steps()
    except BaseException:
        try:
            _delete_link(ns, ifname)
        except Exception:
            pass
        raise


# --- links ------------------------------------------------------------------------------------


def create_bridge(nss: Namespaces, r: Resource) -> None:
    ns = nss.host
    ns.ipr.link("add", ifname=r.key, kind="bridge")
    _all_or_nothing(ns, r.key, lambda: _set_link(ns, r.key, r))


def create_tap(nss: Namespaces, r: Resource) -> None:
    ns = nss.host
    try:
        ns.call(_make_tuntap, r.key, r.get("mode"), r.get("owner"), r.get("group"), bool(r.get("multi_queue")))
    except OSError as exc:
        raise VnetError(f"cannot create {r.get('mode')} {r.key}: {exc.strerror}") from None
    _all_or_nothing(ns, r.key, lambda: _set_link(ns, r.key, r))


def create_veth(nss: Namespaces, r: Resource) -> None:
    ns, peer_ns = nss.host, nss.get(r.get("peer_ns"))
    ns.ipr.link(
        "add",
        ifname=r.key,
        kind="veth",
        peer={"ifname": r.get("peer_name"), "net_ns_fd": str(nsmod.NETNS_DIR / r.get("peer_ns"))},
    )

    def configure() -> None:
        _set_link(ns, r.key, r)
        _set_link(peer_ns, r.get("peer_name"), r, alias_key="peer_mark", mac_key="peer_mac", port=False)

    _all_or_nothing(ns, r.key, configure)


def delete_link(nss: Namespaces, r: Resource) -> None:
    _delete_link(nss.host, r.key)


def update_link(nss: Namespaces, old: Resource, new: Resource) -> None:
    """Change in place what can change in place; recreate the link otherwise."""
    in_place = {"master", "mtu", "mac", "mark", "peer_mac", "peer_mark"}
    changed = {k for k in set(old.a) | set(new.a) if old.get(k) != new.get(k) and new.get(k) is not None}
    if changed - in_place:
        delete(nss, old)
        create(nss, new)
        return
    _set_link(nss.host, new.key, new)
    if new.kind == "veth":
        _set_link(nss.get(new.get("peer_ns")), new.get("peer_name"), new, alias_key="peer_mark", mac_key="peer_mac", port=False)


# --- namespaces ------------------------------------------------------------------------------


def create_netns(nss: Namespaces, r: Resource) -> None:
    if nsmod.exists(r.key):
        raise VnetError(f"network namespace {r.key} exists already and is not vnet's")
    nsmod.create(r.key)
    try:
        ns = nss.get(r.key)
        lo = _index(ns, "lo")
        # the mark lives in the namespace itself, so ownership survives the loss of vnet's state
        ns.ipr.link("set", index=lo, ifalias=r.get("mark"), state="up")
    except BaseException:
        nss.forget(r.key)
        nsmod.remove(r.key)
        raise


def delete_netns(nss: Namespaces, r: Resource) -> None:
    nss.forget(r.key)
    if nsmod.exists(r.key):
        nsmod.remove(r.key)


# --- addresses and routes ----------------------------------------------------------------------


def create_address(nss: Namespaces, r: Resource) -> None:
    ns = nss.get(r.get("ns"))
    ns.ipr.addr(
        "add", index=_index(ns, r.get("ifname")), address=r.get("address"), prefixlen=r.get("prefixlen"), proto=names.ROUTE_PROTO
    )


def delete_address(nss: Namespaces, r: Resource) -> None:
    ns = nss.get(r.get("ns"))
    idx = index_of(ns, r.get("ifname"))
    if idx is None:
        return
    try:
        ns.ipr.addr("del", index=idx, address=r.get("address"), prefixlen=r.get("prefixlen"))
    except NetlinkError as exc:
        if exc.code != EADDRNOTAVAIL:
            raise


def _route_args(ns: Namespace, r: Resource) -> dict[str, Any]:
    args: dict[str, Any] = {"oif": _index(ns, r.get("ifname")), "proto": names.ROUTE_PROTO}
    if r.get("dst") == "default":
        args["dst"] = "0.0.0.0/0"
    else:
        args["dst"] = r.get("dst")
    if r.get("gateway"):
        args["gateway"] = r.get("gateway")
    return args


def create_route(nss: Namespaces, r: Resource) -> None:
    ns = nss.get(r.get("ns"))
    ns.ipr.route("add", **_route_args(ns, r))


def delete_route(nss: Namespaces, r: Resource) -> None:
    ns = nss.get(r.get("ns"))
    if index_of(ns, r.get("ifname")) is None:
        return
    try:
        ns.ipr.route("del", **_route_args(ns, r))
    except NetlinkError as exc:
        if exc.code != ESRCH:
            raise


# --- bridged mode: the uplink joins the bridge and hands it the host's addressing -------------


def _ipv4_state(ns: Namespace, idx: int) -> tuple[list[dict], list[dict]]:
    addrs = []
    for msg in ns.ipr.get_addr(family=socket.AF_INET, index=idx):
        addrs.append(
            {
                "address": msg.get("address"),
                "prefixlen": msg["prefixlen"],
                "broadcast": msg.get("broadcast"),
                "label": msg.get("label"),
                "flags": msg.get("flags") or 0,
            }
        )
    routes = []
    for msg in ns.ipr.get_routes(family=socket.AF_INET, oif=idx):
        if msg.get("proto") == 2 and msg.get("table") == 255:  # kernel's local table follows the address
            continue
        if msg.get("proto") == 2 and not msg.get("gateway"):
            continue  # prefix routes come back with the address
        routes.append(
            {
                "dst": msg.get("dst") or "0.0.0.0",
                "dst_len": msg["dst_len"],
                "gateway": msg.get("gateway"),
                "table": msg.get("table") or 254,
                "proto": msg["proto"],
                "scope": msg["scope"],
                "priority": msg.get("priority"),
                "prefsrc": msg.get("prefsrc"),
            }
        )
    return addrs, routes


def _move_addressing(ns: Namespace, src: int, dst: int) -> None:
    """Copy addresses then routes from src to dst, then drop them from src.

    The copy comes first so the host always holds its addresses somewhere; routes follow the
    addresses because a gateway must be reachable on the new device when the route is added."""
    addrs, routes = _ipv4_state(ns, src)
    dst_name = ns.ipr.get_links(dst)[0].get("ifname")
    for a in addrs:
        kw = {k: v for k, v in a.items() if v is not None and k not in ("flags", "label")}
        try:
            ns.ipr.addr("add", index=dst, **kw)
        except NetlinkError as exc:
            if exc.code != EEXIST:
                raise
    for a in addrs:
        try:
            ns.ipr.addr("del", index=src, address=a["address"], prefixlen=a["prefixlen"])
        except NetlinkError as exc:
            if exc.code != EADDRNOTAVAIL:
                raise
    for rt in routes:
        kw = {k: v for k, v in rt.items() if v is not None}
        kw["dst"] = f"{kw.pop('dst')}/{kw.pop('dst_len')}"
        try:
            ns.ipr.route("replace", oif=dst, **kw)
        except NetlinkError as exc:
            raise VnetError(f"cannot move route {kw['dst']} to {dst_name}: {exc}") from None


def create_uplink(nss: Namespaces, r: Resource) -> None:
    ns = nss.host
    up, br = _index(ns, r.key), _index(ns, r.get("bridge"))
    link = ns.ipr.get_links(up)[0]
    if link.get("master"):
        raise VnetError(f"uplink {r.key} is already a port of another device; release it first")
    # the bridge takes the uplink's MAC so the LAN (DHCP reservations, ARP caches) sees no change
    ns.ipr.link("set", index=br, address=link.get("address"))
    ns.ipr.link("set", index=up, master=br)
    try:
        _move_addressing(ns, up, br)
    except BaseException:
        _move_addressing(ns, br, up)
        ns.ipr.link("set", index=up, master=0)
        raise


def delete_uplink(nss: Namespaces, r: Resource) -> None:
    ns = nss.host
    up, br = index_of(ns, r.key), index_of(ns, r.get("bridge"))
    if up is None:
        return
    if br is not None:
        _move_addressing(ns, br, up)
    ns.ipr.link("set", index=up, master=0)
    ns.ipr.link("set", index=up, state="up")


# --- rate limits: a token bucket on the port's host side shapes what the endpoint receives -----

TC_H_ROOT = 0xFFFFFFFF


def tbf_burst(bits: int) -> int:
    """Bucket size in bytes: 10 ms of traffic, at least 32 KiB (and room for a full GSO frame)."""
    return max(32768, bits // 8 // 100)


def create_qdisc(nss: Namespaces, r: Resource) -> None:
    ns = nss.host
    bits = r.get("rate")
    ns.ipr.tc("replace", "tbf", index=_index(ns, r.key), handle="1:", rate=f"{bits}bit", burst=tbf_burst(bits), latency="50ms")


def delete_qdisc(nss: Namespaces, r: Resource) -> None:
    ns = nss.host
    idx = index_of(ns, r.key)
    if idx is None:
        return
    try:
        ns.ipr.tc("del", index=idx, handle="1:", parent=TC_H_ROOT)
    except NetlinkError as exc:
        if exc.code not in (ENOENT, 22):  # already gone (EINVAL: no such qdisc)
            raise


def qdisc_dump(ns: Namespace) -> dict[int, list]:
    """Every qdisc of the namespace by ifindex, in one dump."""
    out: dict[int, list] = {}
    for q in ns.ipr.get_qdiscs():
        out.setdefault(q["index"], []).append(q)
    return out


def qdisc_resource(dump: dict[int, list], ifname: str, index: int) -> Resource | None:
    for q in dump.get(index, ()):
        if q.get_attr("TCA_KIND") == "tbf" and q["parent"] == TC_H_ROOT:
            opts = q.get_attr("TCA_OPTIONS")
            parms = opts.get_attr("TCA_TBF_PARMS") if opts else None
            rate64 = opts.get_attr("TCA_TBF_RATE64") if opts else None
            rate = rate64 or (parms["rate"] if parms else 0)
            return make("qdisc", ifname, rate=rate * 8)
    return None


# --- dispatch ---------------------------------------------------------------------------------

_CREATE = {
    "netns": create_netns,
    "bridge": create_bridge,
    "tap": create_tap,
    "veth": create_veth,
    "address": create_address,
    "route": create_route,
    "uplink": create_uplink,
    "qdisc": create_qdisc,
}
_DELETE = {
    "netns": delete_netns,
    "bridge": delete_link,
    "tap": delete_link,
    "veth": delete_link,
    "address": delete_address,
    "route": delete_route,
    "uplink": delete_uplink,
    "qdisc": delete_qdisc,
}


def handles(kind: str) -> bool:
    return kind in _CREATE


def create(nss: Namespaces, r: Resource) -> None:
    _CREATE[r.kind](nss, r)


def delete(nss: Namespaces, r: Resource) -> None:
    _DELETE[r.kind](nss, r)


def update(nss: Namespaces, old: Resource, new: Resource) -> None:
    if new.kind in ("bridge", "tap", "veth"):
        update_link(nss, old, new)
    else:
        delete(nss, old)
        create(nss, new)
