"""Guards against a hostile endpoint, each attack tried with real frames in the sandbox twice: from
`evil` (guarded, the default) where it must fail, and from `loose` (`spoofing: allow`, the same
network and the same kind of port) where it must work — so a "blocked" is vnet's rules and not a
missing route or a kernel that ignores the frame. Frames are made by hand with AF_PACKET sockets
inside the endpoints' namespaces (examples/guards.yaml).

A negative needs a moment to be sure of: after each attack frame the sender sends a harmless
multicast "sentinel" through the same socket, and the victim's side is judged once the sentinel
arrived (frames of one port are delivered in order)."""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import struct
import subprocess
import threading
import time

import pytest

from vnet import check, names, nftrules, sandbox, spec
from vnet.drivers.ns import Namespace

from .conftest import EXAMPLES

HOST = sandbox.HOST_ADDR
GW = "192.168.80.1"
VICTIM = "192.168.80.20"
ETH_P_ALL = 0x0003


# --- frames -----------------------------------------------------------------------------------


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(dst: str, src: str, ethertype: int, payload: bytes, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    head = _mac(dst) + _mac(src)
    for tpid, vid in tags:
        head += struct.pack("!HH", tpid, vid)
    frame = head + struct.pack("!H", ethertype) + payload
    return frame + b"\0" * max(0, 60 - len(frame))


def arp_reply(src_mac: str, claim_ip: str, dst_mac: str, dst_ip: str, marker: bytes = b"", tags=()) -> bytes:
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + _mac(src_mac) + ipaddress.IPv4Address(claim_ip).packed
    body += _mac(dst_mac) + ipaddress.IPv4Address(dst_ip).packed
    return eth(dst_mac, src_mac, 0x0806, body + marker, tags)


def _syn(data: bytes) -> bytes:
    """A TCP SYN carrying `data`, its checksum left 0."""
    return struct.pack("!HHIIBBHHH", 40001, 9, 1, 0, 5 << 4, 0x02, 64240, 0, 0) + data


def tcp4(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, data: bytes, tags=()) -> bytes:
    """A TCP SYN carrying `data`, with valid IPv4 and TCP checksums (br_netfilter checks the IP header)."""
    s, d = ipaddress.IPv4Address(src_ip).packed, ipaddress.IPv4Address(dst_ip).packed
    tcp = _syn(data)
    tcp = tcp[:16] + struct.pack("!H", _csum(s + d + struct.pack("!xBH", 6, len(tcp)) + tcp)) + tcp[18:]
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, s, d)
    head = head[:10] + struct.pack("!H", _csum(head)) + head[12:]
    return eth(dst_mac, src_mac, 0x0800, head + tcp, tags)


def ipv6(src: str, dst: str, nh: int, payload: bytes, hops: int = 255) -> bytes:
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    if nh in (58, 17, 6):  # checksum over the pseudo-header
        pseudo = s + d + struct.pack("!I3xB", len(payload), nh)
        off = {58: 2, 17: 6, 6: 16}[nh]
        payload = payload[:off] + struct.pack("!H", _csum(pseudo + payload)) + payload[off + 2 :]
    return struct.pack("!IHBB", 6 << 28, len(payload), nh, hops) + s + d + payload


def mcast_mac(addr: str) -> str:
    b = ipaddress.IPv6Address(addr).packed[-4:]
    return "33:33:" + ":".join(f"{x:02x}" for x in b)


def router_advert(src_mac: str, prefix: str) -> bytes:
    ll = str(nftrules.link_local(src_mac))
    ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
    net = ipaddress.IPv6Network(prefix)
    ra += struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + net.network_address.packed
    ra += struct.pack("!BB", 1, 1) + _mac(src_mac)
    return eth("33:33:00:00:00:01", src_mac, 0x86DD, ipv6(ll, "ff02::1", 58, ra))


def neighbour_advert(src_mac: str, dst_mac: str, dst_ip: str, target: str, lladdr: str) -> bytes:
    na = struct.pack("!BBHI", 136, 0, 0, 0xA0000000)  # router, override
    na += ipaddress.IPv6Address(target).packed + struct.pack("!BB", 2, 1) + _mac(lladdr)
    return eth(dst_mac, src_mac, 0x86DD, ipv6(str(nftrules.link_local(src_mac)), dst_ip, 58, na))


def udp6(src_mac: str, dst_mac: str, dst_ip: str, sport: int, dport: int, data: bytes, src_ip: str | None = None) -> bytes:
    src_ip = src_ip or str(nftrules.link_local(src_mac))
    udp = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    return eth(dst_mac, src_mac, 0x86DD, ipv6(src_ip, dst_ip, 17, udp, hops=64))


def tcp6(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, data: bytes) -> bytes:
    return eth(dst_mac, src_mac, 0x86DD, ipv6(src_ip, dst_ip, 6, _syn(data), hops=64))


def sentinel(src_mac: str, marker: bytes) -> bytes:
    """A harmless datagram to all nodes from the sender's own link-local address."""
    return udp6(src_mac, "33:33:00:00:00:01", "ff02::1", 40000, 40000, marker)


# --- namespaces -------------------------------------------------------------------------------


def ns_of(ep: str) -> str:
    return f"grd-{ep}"


def link(ns: str, dev: str = "eth0") -> dict:
    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show", "dev", dev], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]


def hairpin_of(ns: str, dev: str) -> bool:
    out = subprocess.run(["ip", "-n", ns, "-d", "-j", "link", "show", "dev", dev], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]["linkinfo"]["info_slave_data"]["hairpin"]


def mac_of(ns: str, dev: str = "eth0") -> str:
    return link(ns, dev)["address"]


def send(ns: str, *frames: bytes, dev: str = "eth0") -> None:
    def go() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((dev, 0))
            for f in frames:
                s.send(f)

    n = Namespace(ns)
    try:
        n.call(go)
    finally:
        n.close()


class Sniffer:
    """Every frame that arrives on a device of a namespace, kept to be searched for markers."""

    def __init__(self, ns: str, dev: str = "eth0"):
        n = Namespace(ns)
        try:
            self.sock = n.call(self._open, dev)
        finally:
            n.close()
        self.frames: list[bytes] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    @staticmethod
    def _open(dev: str) -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((dev, 0))
        s.settimeout(0.2)
        return s

    def _read(self) -> None:
        while self.sock.fileno() >= 0:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.frames.append(data)

    def seen(self, marker: bytes) -> bool:
        with self.lock:
            return any(marker in f for f in self.frames)

    def wait(self, marker: bytes, timeout: float = 5.0) -> bool:
        return wait_for(lambda: self.seen(marker), timeout)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=2)

    def __enter__(self) -> Sniffer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_for(cond, timeout: float = 5.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(step)


def neigh_mac(ns: str, address: str, dev: str = "eth0") -> str | None:
    out = subprocess.run(["ip", "-n", ns, "-j", "neigh", "show", "to", address, "dev", dev], capture_output=True, text=True, check=True)
    entries = json.loads(out.stdout or "[]")
    return entries[0].get("lladdr") if entries else None


def sysctl(ns: str, key: str, value: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"], check=True)


def addrs6(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-6", "-j", "addr", "show", "dev", "eth0"], capture_output=True, text=True, check=True)
    return [a["local"] for i in json.loads(out.stdout) for a in i.get("addr_info", [])]


def default6(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-6", "-j", "route", "show", "default"], capture_output=True, text=True, check=True)
    return [r.get("gateway", "") for r in json.loads(out.stdout or "[]")]


def _attempt(ns: str, frames: list[bytes], sniffer: Sniffer, tag: str) -> None:
    """Send `frames` from `ns`, then a sentinel, and wait until the sentinel was seen."""
    marker = f"sentinel-{tag}-{time.monotonic_ns()}".encode()
    send(ns, *frames, sentinel(mac_of(ns), marker))
    assert sniffer.wait(marker), f"the sentinel from {ns} never arrived: the path itself is broken"


# --- fixture ----------------------------------------------------------------------------------


@pytest.fixture
def grd(world):
    topo = world.load("guards.yaml")
    world.apply(topo)
    return world, topo


def _lease(ns: str) -> str:
    leased = check.dhcp_client(ns)
    return leased.split("/")[0]


def _leased_set(world) -> str:
    return check.run_in(world.host, ["nft", "list", "set", "bridge", "vnet-grd", "leased"]).stdout


# --- IPv6 -------------------------------------------------------------------------------------


def test_rogue_router_advertisement_gives_the_neighbour_no_address_and_no_route(grd):
    sysctl(ns_of("victim"), "net.ipv6.conf.eth0.accept_ra", "1")
    evil, loose = mac_of(ns_of("evil")), mac_of(ns_of("loose"))
    with Sniffer(ns_of("victim")) as sn:
        _attempt(ns_of("evil"), [router_advert(evil, "2001:db8:bad:1::/64")], sn, "ra-evil")
        # the control: the very same advertisement from an unguarded port takes the neighbour over
        send(ns_of("loose"), router_advert(loose, "2001:db8:bad:2::/64"))
        assert wait_for(lambda: any(a.startswith("2001:db8:bad:2:") for a in addrs6(ns_of("victim"))), 10)
        assert wait_for(lambda: str(nftrules.link_local(loose)) in default6(ns_of("victim")), 5)
    assert not any(a.startswith("2001:db8:bad:1:") for a in addrs6(ns_of("victim")))
    assert str(nftrules.link_local(evil)) not in default6(ns_of("victim"))


def test_rogue_dhcpv6_server_messages_are_dropped(grd):
    evil, loose, victim = mac_of(ns_of("evil")), mac_of(ns_of("loose")), mac_of(ns_of("victim"))
    victim_ll = str(nftrules.link_local(victim))
    advertise = lambda m, tag: udp6(m, victim, victim_ll, 547, 546, b"\x02\x00\x00\x01" + tag)  # noqa: E731
    with Sniffer(ns_of("victim")) as sn:
        _attempt(ns_of("evil"), [advertise(evil, b"dhcp6-evil")], sn, "d6-evil")
        assert not sn.seen(b"dhcp6-evil")
        send(ns_of("loose"), advertise(loose, b"dhcp6-loose"))
        assert sn.wait(b"dhcp6-loose")
        # the same datagram from another source port is a client's, and passes
        send(ns_of("evil"), udp6(evil, victim, victim_ll, 546, 546, b"dhcp6-client"))
        assert sn.wait(b"dhcp6-client")


def _gateway_ll(world) -> tuple[str, str]:
    br = names.bridge("grd", "lan")
    out = subprocess.run(["ip", "-n", world.host, "-j", "link", "show", "dev", br], capture_output=True, text=True, check=True)
    mac = json.loads(out.stdout)[0]["address"]
    return mac, str(nftrules.link_local(mac))


def test_neighbour_advertisement_spoofing_the_gateway(grd):
    world, _ = grd
    gw_mac, gw_ll = _gateway_ll(world)
    victim = ns_of("victim")
    vmac = mac_of(victim)
    vll = str(nftrules.link_local(vmac))
    ping = ["busybox", "ping", "-6", "-c", "1", "-W", "1", f"{gw_ll}%eth0"]
    # until its link-local address has passed duplicate detection the victim cannot send from it
    assert wait_for(lambda: check.run_in(victim, ping).returncode == 0, 10)
    assert neigh_mac(victim, gw_ll) == gw_mac
    evil, loose = mac_of(ns_of("evil")), mac_of(ns_of("loose"))
    with Sniffer(victim) as sn:
        _attempt(ns_of("evil"), [neighbour_advert(evil, vmac, vll, gw_ll, evil)], sn, "na-evil")
        assert neigh_mac(victim, gw_ll) == gw_mac
        # its own address, but another port's MAC as the link-layer address: dropped too
        _attempt(ns_of("evil"), [neighbour_advert(evil, vmac, vll, str(nftrules.link_local(evil)), loose)], sn, "na-mac")
        assert neigh_mac(victim, str(nftrules.link_local(evil))) in (None, evil)
        send(ns_of("loose"), neighbour_advert(loose, vmac, vll, gw_ll, loose))
        assert wait_for(lambda: neigh_mac(victim, gw_ll) == loose), "the control NA did not take"


def test_ipv6_from_another_source_address_is_dropped(grd):
    evil, loose, victim = mac_of(ns_of("evil")), mac_of(ns_of("loose")), mac_of(ns_of("victim"))
    vll = str(nftrules.link_local(victim))
    with Sniffer(ns_of("victim")) as sn:
        _attempt(ns_of("evil"), [udp6(evil, victim, vll, 5000, 5000, b"v6-spoof-evil", src_ip="fe80::1")], sn, "v6-evil")
        assert not sn.seen(b"v6-spoof-evil")
        send(ns_of("loose"), udp6(loose, victim, vll, 5000, 5000, b"v6-spoof-loose", src_ip="fe80::1"))
        assert sn.wait(b"v6-spoof-loose")


# --- IPv4 and ARP on DHCP ports ---------------------------------------------------------------


def test_before_a_lease_only_dhcp_and_after_it_only_the_leased_address(grd):
    world, _ = grd
    evil, loose = ns_of("evil"), ns_of("loose")
    # no lease yet: an address picked by hand gets nothing through
    for ns, ip in ((evil, "192.168.80.97"), (loose, "192.168.80.96")):
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"], check=True)
    assert not check.ping(evil, GW)
    assert check.ping(loose, GW)
    for ns in (evil, loose):
        subprocess.run(["ip", "-n", ns, "addr", "flush", "dev", "eth0"], check=True)
    # DHCP from 0.0.0.0 passes, and the lease is learned as it happens (dnsmasq's script)
    leased = _lease(evil)
    assert leased.startswith("192.168.80.1")
    key = f"0x{mac_of(evil).replace(':', '')} . 0x{int(ipaddress.IPv4Address(leased)):08x}"
    # learned from the DHCPACK on its way, and given the lease's own time by dnsmasq's script
    assert wait_for(lambda: 60 < _timeout_of(_leased_set(world), key) <= 120, 5), _leased_set(world)
    assert check.ping(evil, GW)
    # another source address after the lease
    subprocess.run(["ip", "-n", evil, "addr", "add", "192.168.80.99/24", "dev", "eth0"], check=True)
    assert not _ping_from(evil, "192.168.80.99", GW)
    assert _ping_from(evil, leased, GW)
    _lease(loose)
    subprocess.run(["ip", "-n", loose, "addr", "add", "192.168.80.98/24", "dev", "eth0"], check=True)
    assert _ping_from(loose, "192.168.80.98", GW)


def _timeout_of(listing: str, key: str) -> int:
    """The timeout in seconds of element `key` in an `nft list set` listing (0 if absent)."""
    found = re.search(re.escape(key) + r" timeout (?:(\d+)m)?(?:(\d+)s)?", listing)
    return int(found.group(1) or 0) * 60 + int(found.group(2) or 0) if found else 0


def _ping_from(ns: str, source: str, target: str) -> bool:
    return check.run_in(ns, ["busybox", "ping", "-c", "1", "-W", "1", "-I", source, target]).returncode == 0


def test_arp_spoofing_of_the_gateway_and_of_a_neighbour_from_a_dhcp_port(grd):
    world, _ = grd
    evil_ns, loose_ns, victim = ns_of("evil"), ns_of("loose"), ns_of("victim")
    _lease(evil_ns)
    _lease(loose_ns)
    evil, loose, vmac = mac_of(evil_ns), mac_of(loose_ns), mac_of(victim)
    gw_mac, _ = _gateway_ll(world)
    br = names.bridge("grd", "lan")
    sysctl(victim, "net.ipv4.neigh.eth0.locktime", "0")
    sysctl(world.host, f"net.ipv4.neigh.{br}.locktime", "0")
    assert check.ping(victim, GW) and check.ping(world.host, VICTIM)
    assert neigh_mac(victim, GW) == gw_mac
    assert neigh_mac(world.host, VICTIM, br) == vmac
    with Sniffer(victim) as sn, Sniffer(world.host, br) as at_host:
        # the gateway's address, to the neighbour
        _attempt(evil_ns, [arp_reply(evil, GW, vmac, VICTIM)], sn, "arp-gw")
        assert neigh_mac(victim, GW) == gw_mac
        # the neighbour's address, to the gateway
        _attempt(evil_ns, [arp_reply(evil, VICTIM, gw_mac, GW)], at_host, "arp-nb")
        assert neigh_mac(world.host, VICTIM, br) == vmac
        # the controls
        send(loose_ns, arp_reply(loose, GW, vmac, VICTIM))
        assert wait_for(lambda: neigh_mac(victim, GW) == loose), "the control ARP reply did not take"
        send(loose_ns, arp_reply(loose, VICTIM, gw_mac, GW))
        assert wait_for(lambda: neigh_mac(world.host, VICTIM, br) == loose), "the control ARP reply did not take"


def test_vlan_tagged_frames_skip_no_guard(grd):
    """The ARP spoof of the gateway inside a VLAN 0 tag (which Linux takes as untagged), an 802.1Q
    tag, an 802.1ad tag and both stacked: none leaves a guarded port; from the unguarded port all
    arrive and the VLAN 0 one poisons the neighbour."""
    world, _ = grd
    evil_ns, loose_ns, victim = ns_of("evil"), ns_of("loose"), ns_of("victim")
    evil, loose, vmac = mac_of(evil_ns), mac_of(loose_ns), mac_of(victim)
    gw_mac, _ = _gateway_ll(world)
    sysctl(victim, "net.ipv4.neigh.eth0.locktime", "0")
    assert check.ping(victim, GW)
    variants = {b"vlan0": ((0x8100, 0),), b"dot1q": ((0x8100, 5),), b"dot1ad": ((0x88A8, 5),), b"qinq": ((0x88A8, 5), (0x8100, 7))}
    with Sniffer(victim) as sn:
        frames = [arp_reply(evil, GW, vmac, VICTIM, b"evil-" + k, tags) for k, tags in variants.items()]
        _attempt(evil_ns, frames, sn, "vlan")
        assert [k for k in variants if sn.seen(b"evil-" + k)] == []
        assert neigh_mac(victim, GW) == gw_mac
        send(loose_ns, *[arp_reply(loose, GW, vmac, VICTIM, b"loose-" + k, tags) for k, tags in variants.items()])
        assert all(sn.wait(b"loose-" + k) for k in variants)
        assert wait_for(lambda: neigh_mac(victim, GW) == loose), "a VLAN 0 ARP reply did not poison the unguarded way"


def test_tcp_from_a_fixed_port_passes_only_from_its_own_mac_and_address(grd):
    """The fast path (one lookup of port, MAC and address accepts a fixed port's TCP, over IPv4 and
    IPv6) lets nothing else through: TCP from another address, from another MAC, as another fixed
    port (`back`'s MAC and address), or inside a VLAN tag is dropped at `web`'s port; the very same
    frames from `loose` arrive, and so does TCP from web's own MAC and addresses."""
    web_ns, loose_ns, victim = ns_of("web"), ns_of("loose"), ns_of("victim")
    web, loose, vmac, back = mac_of(web_ns), mac_of(loose_ns), mac_of(victim), mac_of(ns_of("back"))
    web_ip = "192.168.80.10"
    web_ll, vll, back_ll = (str(nftrules.link_local(m)) for m in (web, vmac, back))

    def attacks(own: str, tag: bytes) -> dict[bytes, bytes]:
        return {
            b"addr": tcp4(own, vmac, "192.168.80.99", VICTIM, tag + b"addr"),
            b"mac": tcp4("52:54:00:66:66:66", vmac, web_ip, VICTIM, tag + b"mac"),
            b"as-back": tcp4(back, vmac, "192.168.81.10", VICTIM, tag + b"as-back"),
            b"dot1q": tcp4(own, vmac, web_ip, VICTIM, tag + b"dot1q", ((0x8100, 5),)),
            b"vlan0": tcp4(own, vmac, web_ip, VICTIM, tag + b"vlan0", ((0x8100, 0),)),
            b"v6-addr": tcp6(own, vmac, "fe80::99", vll, tag + b"v6-addr"),
            b"v6-mac": tcp6("52:54:00:66:66:66", vmac, web_ll, vll, tag + b"v6-mac"),
            b"v6-as-back": tcp6(back, vmac, back_ll, vll, tag + b"v6-as-back"),
        }

    with Sniffer(victim) as sn:
        # web's own TCP passes (the fast path's element), its attacks do not
        _attempt(web_ns, [tcp4(web, vmac, web_ip, VICTIM, b"tcp-web-own"), tcp6(web, vmac, web_ll, vll, b"tcp6-web-own")], sn, "tcp-own")
        assert sn.seen(b"tcp-web-own") and sn.seen(b"tcp6-web-own")
        _attempt(web_ns, list(attacks(web, b"tcp-web-").values()), sn, "tcp-web")
        assert [k for k in attacks(web, b"") if sn.seen(b"tcp-web-" + k)] == []
        # the controls: the same frames from the unguarded port arrive
        send(loose_ns, *attacks(loose, b"tcp-loose-").values())
        assert all(sn.wait(b"tcp-loose-" + k) for k in attacks(loose, b""))


# --- forwards, allow: and isolation -----------------------------------------------------------


def test_a_forward_is_reached_from_another_network_only_through_allow(grd, tmp_path):
    world, topo = grd
    with check.Listener(ns_of("web"), 80):
        assert check.tcp_line(world.sb.wan, HOST, 8080) == sandbox.WAN_ADDR  # published on the uplink
        # from the other network: on the uplink's address and on its own gateway's, refused
        assert check.tcp_line(ns_of("back"), HOST, 8080, timeout_s=1) is None
        assert check.tcp_line(ns_of("back"), "192.168.81.1", 8080, timeout_s=1) is None
        # and yet it has a route: with an allow: rule the same connection goes through
        text = (EXAMPLES / "guards.yaml").read_text() + "allow:\n  - {from: other, to: lan, proto: tcp, ports: [80]}\n"
        allowed = tmp_path / "allowed.yaml"
        allowed.write_text(text)
        world.apply(spec.load(allowed))
        assert check.tcp_line(ns_of("back"), HOST, 8080) == "192.168.81.10"
        assert check.tcp_line(ns_of("back"), "192.168.81.1", 8080) == "192.168.81.10"


def test_an_isolated_port_does_not_reach_its_neighbours_through_the_host(grd):
    lone, victim = ns_of("lone"), ns_of("victim")
    with check.Listener(ns_of("web"), 80):
        # the hairpin of a forward: a neighbour gets through (seen as the gateway), the isolated port not
        assert check.tcp_line(victim, HOST, 8080) == GW
        assert check.tcp_line(lone, HOST, 8080, timeout_s=1) is None
    # routed through the gateway: the same
    for ns in (lone, victim):
        subprocess.run(["ip", "-n", ns, "route", "add", "192.168.80.10/32", "via", GW], check=True)
    assert check.ping(victim, "192.168.80.10")
    assert not check.ping(lone, "192.168.80.10")
    assert check.ping(lone, GW)  # its gateway it reaches
    assert check.ping(lone, sandbox.WAN_ADDR)  # and beyond it, like any nat port


def test_the_forward_target_reaches_its_own_forward(grd):
    """With br_netfilter the DNAT'ed frame is bridged back out of the port it came in on: vnet
    puts the forward's target port (and only it) in hairpin mode."""
    world, _ = grd
    with check.Listener(ns_of("web"), 80):
        assert check.tcp_line(ns_of("web"), HOST, 8080) == GW  # masqueraded on the hairpin path
    assert hairpin_of(world.host, names.endpoint_veth("grd", "web", None)) is True
    assert hairpin_of(world.host, names.endpoint_veth("grd", "victim", None)) is False
    # the control: without hairpin mode on the target's port, the same connection goes nowhere
    subprocess.run(["ip", "-n", world.host, "link", "set", "dev", names.endpoint_veth("grd", "web", None), "type", "bridge_slave",
                    "hairpin", "off"], check=True)
    with check.Listener(ns_of("web"), 80):
        assert check.tcp_line(ns_of("web"), HOST, 8080, timeout_s=1) is None
    # and the next apply puts it back
    assert [a.describe() for a in world.plan(grd[1]).actions] != []
    world.apply(grd[1])
    with check.Listener(ns_of("web"), 80):
        assert check.tcp_line(ns_of("web"), HOST, 8080) == GW


# --- IPv6 where vnet cannot know a port's address (DHCPv6 here; a bridged LAN's prefix alike) -----

LEASED6 = """
name: g6
networks:
  lan: {mode: host, subnet: 192.168.86.0/24, subnet6: "fd00:86::/64", dhcp6: true}
endpoints:
  evil: {kind: netns, network: lan, address: 192.168.86.10/24}
  loose: {kind: netns, network: lan, address: 192.168.86.11/24, spoofing: allow}
  victim: {kind: netns, network: lan, address: 192.168.86.12/24, address6: "fd00:86::12/64"}
"""


def test_a_port_of_unknown_ipv6_address_claims_no_reserved_one(world):
    world.apply(spec.load_text(LEASED6))
    evil, loose, victim = (f"g6-{n}" for n in ("evil", "loose", "victim"))
    emac, lmac, vmac = mac_of(evil), mac_of(loose), mac_of(victim)
    gw, gw_mac = "fd00:86::1", link(world.host, names.bridge("g6", "lan"))["address"]
    assert wait_for(lambda: check.run_in(victim, ["busybox", "ping", "-6", "-c", "1", "-W", "1", gw]).returncode == 0, 10)
    assert neigh_mac(victim, gw) == gw_mac
    with Sniffer(victim) as sn:
        # an address of its own choosing passes: a DHCPv6 lease could be any in the range
        send(evil, udp6(emac, vmac, "fd00:86::12", 5000, 5000, b"v6-free", src_ip="fd00:86::77"))
        assert sn.wait(b"v6-free")
        # the gateway's address, as a source or in a Neighbour Advertisement: dropped by vnet's rules
        _attempt(evil, [udp6(emac, vmac, "fd00:86::12", 5000, 5000, b"v6-gw-evil", src_ip=gw),
                        neighbour_advert(emac, vmac, "fd00:86::12", gw, emac)], sn, "g6-evil")
        assert not sn.seen(b"v6-gw-evil")
        assert neigh_mac(victim, gw) == gw_mac
        # the control: the same from an unguarded port takes the victim's entry for the gateway
        send(loose, udp6(lmac, vmac, "fd00:86::12", 5000, 5000, b"v6-gw-loose", src_ip=gw),
             neighbour_advert(lmac, vmac, "fd00:86::12", gw, lmac))
        assert sn.wait(b"v6-gw-loose")
        assert wait_for(lambda: neigh_mac(victim, gw) == lmac), "the control NA did not take"
    world.destroy("g6")
