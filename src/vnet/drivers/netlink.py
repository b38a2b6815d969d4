"""Links, addresses, routes, namespaces and the uplink move, through rtnetlink (pyroute2).

Each function does one resource's create, delete or update. A create that takes several netlink
requests removes what it made if a later request fails, so a step is all or nothing.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import struct
from contextlib import ExitStack, contextmanager
from typing import Iterator

from vnet import names
from vnet.drivers import ns as nsmod
from vnet.drivers import rtnl
from vnet.drivers.ns import Namespace, Namespaces
from vnet.drivers.rtnl import RtnlError
from vnet.errors import VnetError
from vnet.resources import Resource, make

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETGROUP = 0x400454CE
IFF_TUN, IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE = 0x0001, 0x0002, 0x1000, 0x0100
ENODEV, ENOENT, EEXIST, ESRCH, EADDRNOTAVAIL = errno.ENODEV, errno.ENOENT, errno.EEXIST, errno.ESRCH, errno.EADDRNOTAVAIL


def index_of(ns: Namespace, ifname: str) -> int | None:
    """The link's ifindex: from what this run has seen already, else one RTM_GETLINK by name."""
    idx = ns.indexes.get(ifname)
    if idx is None:
        link = ns.nl.link(ifname)
        if link is None:
            return None
        idx = ns.indexes[ifname] = link.index
    return idx


def _index(ns: Namespace, ifname: str) -> int:
    idx = index_of(ns, ifname)
    if idx is None:
        raise VnetError(f"interface {ifname} not found in {ns.label}")
    return idx


def _port_without_ipv6(ifname: str) -> None:
    """Switch IPv6 off on a link that will be a bridge port (runs inside its namespace), before it
    has a carrier. A port needs no address of its own, and each one that has IPv6 adds a
    link-local address and three routes to the namespace's IPv6 table, which the kernel walks
    whole on every link event there and for every bridged multicast packet (br_netfilter's
    lookup): at 5,000 ports each request took 10–20× as long at the end of an apply as at its
    start. (No IPv6 in the kernel: nothing to switch off.)"""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
            f.write("1\n")
    except FileNotFoundError:
        pass


def _ports_without_ipv6(ifnames: list[str]) -> None:
    for ifname in ifnames:
        _port_without_ipv6(ifname)


def _make_tuntap(name: str, mode: str, owner: int | None, group: int | None, multi_queue: bool, port: bool = False) -> None:
    # runs inside the target namespace (worker thread): the device is born there, no fork needed
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        flags = (IFF_TAP if mode == "tap" else IFF_TUN) | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
        if port:
            _port_without_ipv6(name)
        if owner is not None:
            fcntl.ioctl(fd, TUNSETOWNER, owner)
        if group is not None:
            fcntl.ioctl(fd, TUNSETGROUP, group)
        fcntl.ioctl(fd, TUNSETPERSIST, 1)
    finally:
        os.close(fd)


def _settings(ns: Namespace, r: Resource, mac_key: str = "mac", port: bool = True) -> dict:
    """MAC, MTU, master and up: what a link gets when it is made (or set on it after)."""
    out: dict = {"up": True, "mac": r.get(mac_key), "mtu": r.get("mtu")}
    if port and "master" in r.a:
        master = r.get("master")
        out["master"] = _index(ns, master) if master else 0
    return out


def _set_link(ns: Namespace, ifname: str, r: Resource, alias_key: str = "mark", mac_key: str = "mac", port: bool = True) -> None:
    """Alias, MAC, MTU, master and up in one request, to the link by name: one round trip (and
    a second for a hairpin port, which the kernel sets only once the link is a port)."""
    ns.nl.request(*rtnl.set_link(ifname=ifname, alias=r.get(alias_key), **_settings(ns, r, mac_key, port)))
    if port and r.get("master") and r.get("hairpin"):
        ns.nl.request(*rtnl.set_bridge_port(ifname, True))


def _delete_link(ns: Namespace, ifname: str) -> None:
    ns.indexes.clear()
    try:
        ns.nl.request(*rtnl.del_link(ifname=ifname))
    except RtnlError as exc:
        if exc.code != ENODEV:
            raise


def _all_or_nothing(ns: Namespace, ifname: str, steps) -> None:
    try:
        steps()
    except BaseException:
        try:
            _delete_link(ns, ifname)
        except Exception:
            pass
        raise


def _create_marked(ns: Namespace, create: tuple[int, int, bytes], ifname: str, mark: str) -> None:
    """Create a link, then mark it (the kernel takes no ifalias at creation). Two requests, not one
    batch: were the create refused (the name taken), a batched mark would land on the link that
    holds the name — someone else's."""
    ns.nl.request(*create)
    _all_or_nothing(ns, ifname, lambda: ns.nl.request(*rtnl.set_link(ifname=ifname, alias=mark)))


# --- links ------------------------------------------------------------------------------------


def create_bridge(nss: Namespaces, r: Resource) -> None:
    ns = nss.host
    _create_marked(ns, rtnl.new_link(r.key, "bridge", mac=r.get("mac"), mtu=r.get("mtu"), up=True), r.key, r.get("mark"))


def create_tap(nss: Namespaces, r: Resource) -> None:
    create_taps(nss, [r])


def _make_tuntaps(rs: list[Resource], made: list[str]) -> None:
    for r in rs:
        try:
            _make_tuntap(r.key, r.get("mode"), r.get("owner"), r.get("group"), bool(r.get("multi_queue")), bool(r.get("master")))
        except OSError as exc:
            raise VnetError(f"cannot create {r.get('mode')} {r.key}: {exc.strerror}") from None
        made.append(r.key)


def create_taps(nss: Namespaces, rs: list[Resource]) -> None:
    """Every device in one trip into the target namespace (a trip each cost more than the device),
    then every tap's mark, MAC, MTU, bridge and up as one netlink batch. Should any of it fail,
    what this call made goes again: unmarked taps would otherwise be left to recovery's sweep."""
    ns = nss.host
    made: list[str] = []  # only these go again on failure: never a link of that name made by someone else
    try:
        ns.call(_make_tuntaps, rs, made)
        requests = []
        for r in rs:
            requests.append(rtnl.set_link(ifname=r.key, alias=r.get("mark"), **_settings(ns, r)))
            if r.get("master") and r.get("hairpin"):  # set only once the link is a port
                requests.append(rtnl.set_bridge_port(r.key, True))
        _raise_first(ns.nl.batch(requests))
    except BaseException:
        _take_back(ns, made)
        raise


@contextmanager
def _netns_fd(name: str) -> Iterator[int]:
    fd = os.open(nsmod.NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def create_veth(nss: Namespaces, r: Resource) -> None:
    create_veths(nss, [r])


def create_veths(nss: Namespaces, rs: list[Resource]) -> None:
    """Each pair in one request (the host end with its MAC, MTU, bridge and up; the peer born in
    its namespace with its MAC and MTU), the requests sent a window at a time, then every host
    end's mark; then, once every pair is made, each peer's mark and up. A peer coming up gives both
    ends a carrier, and the kernel handles a veth's carrier change at once, under the lock every
    link request takes: peers brought up between creations slowed each next creation (500 pairs:
    0.75 s; peers up after: 0.53 s). Sent as windows rather than one request at a time, the 500
    creations took 0.30 s instead of 0.33 s (medians of six, interleaved). Should the making or
    marking fail, every pair this call made goes again: unmarked, recovery would not know them."""
    ns = nss.host
    made: list[str] = []  # only these go again on failure: never a link of that name made by someone else
    try:
        for start in range(0, len(rs), rtnl.IN_FLIGHT):
            window = rs[start : start + rtnl.IN_FLIGHT]
            with ExitStack() as fds:  # a window's namespaces held open: at most IN_FLIGHT descriptors
                requests = []
                for r in window:
                    fd = fds.enter_context(_netns_fd(r.get("peer_ns")))
                    peer = rtnl.veth_peer(r.get("peer_name"), fd, r.get("peer_mac"), r.get("mtu"))
                    requests.append(rtnl.new_link(r.key, "veth", info_data=peer, **_settings(ns, r)))
                results = ns.nl.batch(requests)
            made += [r.key for r, err in zip(window, results) if err is None]
            _raise_first(results)
        marks = [rtnl.set_link(ifname=r.key, alias=r.get("mark")) for r in rs]
        marks += [rtnl.set_bridge_port(r.key, True) for r in rs if r.get("hairpin")]  # set only once the link is a port
        _raise_first(ns.nl.batch(marks))
    except BaseException:
        _take_back(ns, made)
        raise
    # every port's IPv6 off in one trip into the target namespace, while the peers are down, so
    # the host ends have no carrier yet (a link made here is marked: recovery removes it on failure)
    ports = [r.key for r in rs if r.get("master")]
    if ports:
        ns.call(_ports_without_ipv6, ports)
    for r in rs:
        peer_ns = nss.get(r.get("peer_ns"))
        _all_or_nothing(ns, r.key, lambda: peer_ns.nl.request(*rtnl.set_link(ifname=r.get("peer_name"), alias=r.get("peer_mark"), up=True)))


def _take_back(ns: Namespace, made: list[str]) -> None:
    """Delete the links a failed call made (only those: never a link of that name it did not make),
    each as best it can: the error that failed the call is the one to report."""
    for name in made:
        try:
            _delete_link(ns, name)
        except Exception:
            pass


def _raise_first(results: list[RtnlError | None]) -> None:
    failed = next((e for e in results if e is not None), None)
    if failed is not None:
        raise failed


def _forget_peer(nss: Namespaces, r: Resource) -> None:
    # a veth takes its peer along: what its namespace's cache says of it names nothing any more
    if r.kind == "veth" and r.get("peer_ns") and nsmod.exists(r.get("peer_ns")):
        nss.get(r.get("peer_ns")).indexes.clear()


def delete_link(nss: Namespaces, r: Resource) -> None:
    _delete_link(nss.host, r.key)
    _forget_peer(nss, r)


def delete_links(nss: Namespaces, rs: list[Resource]) -> None:
    """Many links of the target namespace at once, all or none: each is put in a link group of
    its own number (unused by any link there), then the group is deleted in one request.

    Deleting links one by one waits out the kernel's RCU grace periods for each (about 17 ms a
    link here); a group is unregistered as one batch."""
    import random  # here, not at the top: only this needs it, and it costs every start-up ~1 ms

    ns = nss.host
    links = {li.ifname: li for li in ns.nl.links()}
    todo = [links[r.key] for r in rs if r.key in links]
    if len(todo) < 2:
        for r in rs:
            delete_link(nss, r)
        return
    used = {li.group for li in links.values()}
    group = next(g for g in iter(lambda: random.randrange(1 << 16, 1 << 31), None) if g not in used)
    grouped = todo  # until the kernel says which took the group, put every one back on failure
    try:
        results = ns.nl.batch([rtnl.set_link(li.index, group=group) for li in todo])
        grouped = [li for li, e in zip(todo, results) if e is None]
        _raise_first(results)
        ns.nl.request(*rtnl.del_group(group))
    except BaseException:
        ns.nl.batch([rtnl.set_link(li.index, group=li.group) for li in grouped])
        raise
    finally:
        ns.indexes.clear()
    for r in rs:
        _forget_peer(nss, r)


IN_PLACE = {"master", "mtu", "mac", "mark", "peer_mac", "peer_mark", "hairpin"}


def changes_in_place(old: Resource, new: Resource) -> bool:
    """True when every change from old to new can be made to the link as it is."""
    changed = {k for k in set(old.a) | set(new.a) if old.get(k) != new.get(k) and new.get(k) is not None}
    return not changed - IN_PLACE


def set_in_place(nss: Namespaces, new: Resource, old: Resource | None = None) -> None:
    _set_link(nss.host, new.key, new)
    if old is not None and old.get("hairpin") and not new.get("hairpin") and new.get("master"):
        nss.host.nl.request(*rtnl.set_bridge_port(new.key, False))  # no longer a forward's target
    if new.kind == "veth":
        _set_link(nss.get(new.get("peer_ns")), new.get("peer_name"), new, alias_key="peer_mark", mac_key="peer_mac", port=False)


# --- namespaces ------------------------------------------------------------------------------


def create_netnses(nss: Namespaces, rs: list[Resource]) -> None:
    """The namespaces, made in one trip of the thread that enters namespaces (nsmod.create_many),
    each one's `lo` marked and up as soon as it is made. All or none: on failure every one made
    here goes again."""
    try:
        present = set(os.listdir(nsmod.NETNS_DIR))  # one read of the directory, not five stats a name
    except FileNotFoundError:
        present = set()
    for r in rs:
        if r.key not in present:
            continue
        if nsmod.exists(r.key):
            raise VnetError(f"network namespace {r.key} exists already and is not vnet's")
        if nsmod.half_made(r.key):
            raise VnetError(f"{nsmod.NETNS_DIR / r.key} is a file with no namespace mounted on it (a killed `ip netns add`?); "
                            f"if nothing is creating it right now, remove it with `ip netns delete {r.key}`")

    def lo_up(i: int, nl: rtnl.Rtnl) -> None:
        # the mark lives in the namespace itself, so ownership survives the loss of vnet's state
        nl.request(*rtnl.set_link(ifname="lo", alias=rs[i].get("mark"), up=True))

    made = nsmod.create_many([r.key for r in rs], then=lo_up, ahead=nss.take_ahead())
    try:
        for r, nl in zip(rs, made):
            nss.get(r.key, listed=True).adopt(nl)  # just made: not looked up again
    except BaseException:
        for r in rs:
            nss.forget(r.key)
        nsmod.remove_all([r.key for r in rs])
        raise


def delete_netns(nss: Namespaces, r: Resource) -> None:
    nss.forget(r.key)
    if nsmod.exists(r.key):
        nsmod.remove(r.key)


# --- addresses and routes ----------------------------------------------------------------------


def create_address(nss: Namespaces, r: Resource) -> None:
    ns = nss.get(r.get("ns"))
    # an IPv6 address vnet declares is unique by validation: usable at once, no duplicate
    # address detection holding it tentative (dnsmasq could not bind to it yet)
    flags = rtnl.IFA_F_NODAD if ":" in r.get("address") else 0
    ns.nl.request(*rtnl.add_addr(_index(ns, r.get("ifname")), r.get("address"), r.get("prefixlen"), proto=names.ROUTE_PROTO, flags=flags))


def delete_address(nss: Namespaces, r: Resource) -> None:
    ns = nss.get(r.get("ns"))
    idx = index_of(ns, r.get("ifname"))
    if idx is None:
        return
    try:
        ns.nl.request(*rtnl.del_addr(idx, r.get("address"), r.get("prefixlen")))
    except RtnlError as exc:
        if exc.code != EADDRNOTAVAIL:
            raise


def _route(r: Resource) -> tuple[str, int]:
    if r.get("dst") == "default":
        return "0.0.0.0", 0
    dst, _, plen = r.get("dst").partition("/")
    return dst, int(plen or (128 if ":" in dst else 32))


def create_route(nss: Namespaces, r: Resource) -> None:
    ns = nss.get(r.get("ns"))
    dst, plen = _route(r)
    ns.nl.request(*rtnl.add_route(dst, plen, oif=_index(ns, r.get("ifname")), gateway=r.get("gateway"), proto=names.ROUTE_PROTO))


def delete_route(nss: Namespaces, r: Resource) -> None:
    ns = nss.get(r.get("ns"))
    idx = index_of(ns, r.get("ifname"))
    if idx is None:
        return
    dst, plen = _route(r)
    try:
        ns.nl.request(*rtnl.del_route(dst, plen, oif=idx, gateway=r.get("gateway"), proto=names.ROUTE_PROTO))
    except RtnlError as exc:
        if exc.code != ESRCH:
            raise


# --- bridged mode: the uplink joins the bridge and hands it the host's addressing -------------

RT_SCOPE_LINK = rtnl.RT_SCOPE_LINK
RTPROT_KERNEL = 2


def _movable_addr(a: rtnl.Addr) -> bool:
    # an IPv6 link-local address belongs to the device itself (each has its own)
    return not (a.family == rtnl.AF_INET6 and (a.scope == RT_SCOPE_LINK or (a.address or "").startswith("fe80:")))


def _addressing(ns: Namespace, idx: int) -> tuple[list[rtnl.Addr], list[rtnl.Route]]:
    """The addresses (IPv4, and IPv6 but link-local) and routes of one device that move with it."""
    routes = []
    for rt in ns.nl.routes() + ns.nl.routes(family=rtnl.AF_INET6):
        if rt.oif != idx or rt.type != rtnl.RTN_UNICAST:
            continue  # the kernel's local, broadcast and multicast routes follow the address
        if rt.proto == RTPROT_KERNEL and not rt.gateway:
            continue  # prefix routes come back with the address (fe80::/64 stays with the device)
        if rt.table != rtnl.RT_TABLE_MAIN and rt.family == rtnl.AF_INET6:
            continue
        routes.append(rt)
    return [a for a in ns.nl.addrs(idx) if _movable_addr(a)], routes


def _copy_addressing(ns: Namespace, addrs: list[rtnl.Addr], routes: list[rtnl.Route], to: int) -> None:
    for a in addrs:
        # IPv6: what a router advertisement gave keeps its flags and what is left of its lifetimes,
        # and skips duplicate address detection (the address is the host's already)
        v6 = a.family == rtnl.AF_INET6
        flags = ((a.flags & ~rtnl.IFA_F_PERMANENT) | rtnl.IFA_F_NODAD) if v6 else 0
        lifetimes = (a.preferred, a.valid) if v6 and a.valid != rtnl.INFINITY_LIFE else None
        try:
            ns.nl.request(*rtnl.add_addr(to, a.address if not v6 else (a.local or a.address), a.prefixlen, proto=a.proto,
                                         broadcast=a.broadcast, local=a.local, flags=flags, lifetimes=lifetimes))
        except RtnlError as exc:
            if exc.code != EEXIST:
                raise
    # routes without a gateway first: a gateway must be reachable when its route is added
    for rt in sorted(routes, key=lambda rt: rt.gateway is not None):
        any_dst = "::" if rt.family == rtnl.AF_INET6 else "0.0.0.0"
        try:
            ns.nl.request(*rtnl.add_route(rt.dst or any_dst, rt.dst_len, oif=to, gateway=rt.gateway, proto=rt.proto, table=rt.table,
                                          scope=rt.scope, priority=rt.priority, prefsrc=rt.prefsrc, replace=True,
                                          flags=rt.flags & rtnl.RTNH_F_ONLINK,  # not DEAD/LINKDOWN: state, not settings
                                          **_ipv6_extras(rt)))
        except RtnlError as exc:
            dst_link = ns.nl.link_by_index(to)
            raise VnetError(f"cannot move route {rt.dst or any_dst}/{rt.dst_len} to {dst_link.ifname if dst_link else to}: {exc}") from None


def _ipv6_extras(rt: rtnl.Route) -> dict:
    """What an IPv6 route from a router advertisement carries besides its gateway: preference,
    hop limit (metrics) and what is left of its lifetime."""
    if rt.family != rtnl.AF_INET6:
        return {}
    return {"pref": rt.pref, "metrics": rt.metrics, "expires": rt.expires}


def _drop_addressing(ns: Namespace, addrs: list[rtnl.Addr], routes: list[rtnl.Route], index: int) -> None:
    for a in addrs:
        try:
            ns.nl.request(*rtnl.del_addr(index, a.local or a.address if a.family == rtnl.AF_INET6 else a.address, a.prefixlen))
        except RtnlError as exc:
            if exc.code != EADDRNOTAVAIL:
                raise
    # IPv4 routes go with the device's last address. IPv6 ones stay: routes through a link-local
    # gateway (a router advertisement's default route), and the prefix route of an address that
    # expires (the kernel leaves it to expire with the advertisement)
    doomed = [(rt.dst or "::", rt.dst_len, rt.gateway, rt.table) for rt in routes if rt.family == rtnl.AF_INET6]
    for a in addrs:
        if a.family == rtnl.AF_INET6 and a.valid != rtnl.INFINITY_LIFE:
            net = ipaddress.IPv6Interface(f"{a.local or a.address}/{a.prefixlen}").network
            doomed.append((str(net.network_address), a.prefixlen, None, rtnl.RT_TABLE_MAIN))
    for dst, plen, gateway, table in doomed:
        try:
            ns.nl.request(*rtnl.del_route(dst, plen, oif=index, gateway=gateway, table=table))
        except RtnlError as exc:
            if exc.code != ESRCH:
                raise


def _move_addressing(ns: Namespace, src: int, dst: int) -> None:
    """Copy addresses then routes from src to dst, then drop them from src; IPv4 and IPv6.

    The copy comes first so the host always holds its addresses somewhere (and removing a
    device's last address makes the kernel flush its routes, so they must be on dst by then). If
    any of it fails, src gets back exactly what it had, from what was read before."""
    addrs, routes = _addressing(ns, src)
    try:
        _copy_addressing(ns, addrs, routes, dst)
        _drop_addressing(ns, addrs, routes, src)
    except BaseException:
        _copy_addressing(ns, addrs, routes, src)
        _drop_addressing(ns, addrs, routes, dst)
        raise


def create_uplink(nss: Namespaces, r: Resource) -> None:
    ns = nss.host
    link, br = ns.nl.link(r.key), _index(ns, r.get("bridge"))
    if link is None:
        raise VnetError(f"interface {r.key} not found in {ns.label}")
    if link.master:
        raise VnetError(f"uplink {r.key} is already a port of another device; release it first")
    # the bridge takes the uplink's MAC so the LAN (DHCP reservations, ARP caches) sees no change
    ns.nl.request(*rtnl.set_link(br, mac=link.mac))
    ns.nl.request(*rtnl.set_link(link.index, master=br))
    try:
        _move_addressing(ns, link.index, br)
    except BaseException:
        _move_addressing(ns, br, link.index)
        ns.nl.request(*rtnl.set_link(link.index, master=0))
        raise


def delete_uplink(nss: Namespaces, r: Resource) -> None:
    ns = nss.host
    up, br = index_of(ns, r.key), index_of(ns, r.get("bridge"))
    if up is None:
        return
    if br is not None:
        _move_addressing(ns, br, up)
    ns.nl.request(*rtnl.set_link(up, master=0))
    ns.nl.request(*rtnl.set_link(up, up=True))


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
    from pyroute2.netlink.exceptions import NetlinkError

    ns = nss.host
    idx = index_of(ns, r.key)
    if idx is None:
        return
    try:
        ns.ipr.tc("del", index=idx, handle="1:", parent=TC_H_ROOT)
    except NetlinkError as exc:
        if exc.code not in (ENOENT, 22):  # already gone (EINVAL: no such qdisc)
            raise


def qdisc_dump(ns: Namespace) -> dict[int, list[rtnl.Qdisc]]:
    """The namespace's tbf qdiscs (vnet's rate limits) by ifindex, in one dump."""
    out: dict[int, list[rtnl.Qdisc]] = {}
    for q in ns.nl.qdiscs("tbf"):
        out.setdefault(q.index, []).append(q)
    return out


def qdisc_resource(dump: dict[int, list[rtnl.Qdisc]], ifname: str, index: int) -> Resource | None:
    for q in dump.get(index, ()):
        if q.kind == "tbf" and q.parent == TC_H_ROOT:
            return make("qdisc", ifname, rate=(q.tbf_rate or 0) * 8)
    return None


# --- tun/tap data, as the link dump carries it -------------------------------------------------

TUN_TYPES = {1: "tun", 2: "tap"}
UNSET_ID = 0xFFFFFFFF


def tun_attrs(data: dict) -> dict:
    def ident(key: str) -> int | None:
        value = data.get(key)
        return None if value in (None, UNSET_ID) else value
    return {
        "mode": TUN_TYPES.get(data.get("IFLA_TUN_TYPE"), "?"),
        "owner": ident("IFLA_TUN_OWNER"),
        "group": ident("IFLA_TUN_GROUP"),
        "multi_queue": bool(data.get("IFLA_TUN_MULTI_QUEUE")),
    }


# --- VXLAN: the device (a port of its network's bridge) and its flood list -----------------------


def create_vxlan(nss: Namespaces, r: Resource) -> None:
    """The device with its VNI, local address, port, no learning, MTU and bridge; then its mark,
    then its FDB: one all-zero entry per peer (head-end replication) and one per remote MAC
    vnet knows. All or nothing."""
    ns = nss.host
    data = rtnl.vxlan_data(r.get("vni"), r.get("local"), r.get("port"), learning=False)
    _create_marked(ns, rtnl.new_link(r.key, "vxlan", info_data=data, **_settings(ns, r)), r.key, r.get("mark"))
    _all_or_nothing(ns, r.key, lambda: set_fdb(nss, r.key, (), fdb_entries(r)))


def fdb_entries(r: Resource) -> tuple[tuple[str, str], ...]:
    """(MAC, remote address) of every static FDB entry a vxlan resource asks for."""
    flood = [(rtnl.ZERO_MAC, dst) for dst in r.get("peers") or ()]
    return tuple(flood + [tuple(e.split("@")) for e in r.get("macs") or ()])


def set_fdb(nss: Namespaces, ifname: str, old: tuple[tuple[str, str], ...], new: tuple[tuple[str, str], ...]) -> None:
    """Turn the device's static FDB from `old` into `new`: entries no longer wanted are removed,
    new ones appended; an entry already there (or already gone) is no error."""
    ns = nss.host
    idx = _index(ns, ifname)
    requests = [rtnl.fdb_del(idx, dst, mac) for mac, dst in old if (mac, dst) not in new]
    requests += [rtnl.fdb_append(idx, dst, mac) for mac, dst in new if (mac, dst) not in old]
    for err in ns.nl.batch(requests):
        if err is not None and err.code not in (EEXIST, ENOENT):
            raise err


def static_fdb(ns: Namespace, index: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(flood list, "MAC@address" entries) of a vxlan device's FDB, sorted."""
    entries = [e for e in ns.nl.fdb(index) if e.dst and e.mac]
    flood = tuple(sorted(e.dst for e in entries if e.mac == rtnl.ZERO_MAC))
    macs = tuple(sorted(f"{e.mac}@{e.dst}" for e in entries if e.mac != rtnl.ZERO_MAC))
    return flood, macs
