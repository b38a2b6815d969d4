"""Traffic: iperf3 TCP throughput and a bounded loop of new TCP connections, between namespaces."""

from __future__ import annotations

import ctypes
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from bench import world
from bench.env import in_ns, run
from vnet.drivers import process
from vnet.drivers.ns import Namespace
from vnet.drivers.rtnl import NETLINK_NETFILTER, Netlink

# accepts and closes connections, forever (the benchmark kills it)
ACCEPTOR = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4096)
while True:
    c, _ = s.accept()
    c.close()
"""

# opens and closes connections one after another, bounded by count and by time; closes with RST
# (SO_LINGER 0) so no TIME_WAIT piles up and the ephemeral ports last
CONNECTOR = """
import json, socket, struct, sys, time
addr, port, seconds, cap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
linger = struct.pack("ii", 1, 0)
n = fail = 0
t0 = time.perf_counter(); end = t0 + seconds
while n < cap and time.perf_counter() < end and fail < 50:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.settimeout(1.0)
    try:
        s.connect((addr, port)); n += 1
    except OSError:
        fail += 1
    finally:
        s.close()
print(json.dumps({"connections": n, "failures": fail, "seconds": time.perf_counter() - t0}))
"""


@dataclass
class Servers:
    """Daemons the benchmark starts in namespaces; stopped by pid, never by name."""

    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self, ns: str, argv: list[str]) -> None:
        self.procs.append(
            subprocess.Popen(in_ns(ns, argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        )

    def acceptor(self, ns: str, port: int) -> None:
        self.start(ns, [sys.executable, "-c", ACCEPTOR, str(port)])

    def iperf3(self, ns: str, port: int) -> None:
        self.start(ns, ["iperf3", "-s", "-p", str(port)])

    def stop(self) -> None:
        pids = [p.pid for p in self.procs if p.poll() is None]
        # nsenter execs the program, so the pid is the server itself
        process.stop_pids(pids, timeout=3.0)
        for p in self.procs:
            try:
                p.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()


CTNETLINK_FLUSH = (1 << 8) | 2  # NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE


def flush_conntrack(ns: str) -> None:
    """Empty a namespace's connection-tracking table, as `conntrack -F` does (a delete request with
    nothing to match, over ctnetlink). Each configuration then starts from an empty table, not from
    the thousands of entries the one before left (a reset connection's entry lives on for 10 s)."""
    sock = Namespace(ns).call(socket.socket, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    nl = Netlink(sock)
    try:
        nl.request(CTNETLINK_FLUSH, 0, struct.pack("=BBH", socket.AF_UNSPEC, 0, 0))
    finally:
        nl.close()


def wait_listening(ns: str, ports: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = run(in_ns(ns, ["ss", "-tlnH"]), check=False).stdout
        if all(f":{p} " in out for p in ports):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {ports} in {ns}")


# connects once, retrying until one connection succeeds or the time is up; prints the seconds it took
PROBE = """
import socket, sys, time
addr, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic(); why = ""
while time.monotonic() - t0 < seconds:
    s = socket.socket(); s.settimeout(0.5)
    try:
        s.connect((addr, port)); print(time.monotonic() - t0); sys.exit(0)
    except OSError as exc:
        why = str(exc); time.sleep(0.05)
    finally:
        s.close()
print(why); sys.exit(1)
"""


def wait_connects(client_ns: str, addr: str, port: int, timeout: float = 10.0) -> float:
    """Wait (bounded) until a TCP connection from `client_ns` to addr:port succeeds: the server
    listens and the rules in between let a new connection through. Returns the wait in seconds."""
    proc = run(in_ns(client_ns, [sys.executable, "-c", PROBE, addr, str(port), str(timeout)]), check=False, timeout=timeout + 10)
    if proc.returncode != 0:
        raise RuntimeError(f"no TCP connection from {client_ns} to {addr}:{port} within {timeout:.0f} s ({proc.stdout.strip() or proc.stderr.strip()})")
    return float(proc.stdout)


def throughput(client_ns: str, addr: str, port: int, seconds: int = 3) -> float:
    """TCP throughput in Gbit/s that the receiver saw, one stream, after a 1 s warm-up omitted.
    The control connection gives up after 5 s (a dropped SYN would otherwise hang it for minutes)."""
    argv = ["iperf3", "-c", addr, "-p", str(port), "-t", str(seconds), "-O", "1", "-J", "--connect-timeout", "5000"]
    proc = run(in_ns(client_ns, argv), timeout=seconds + 20)
    data = json.loads(proc.stdout)
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def connection_rate(client_ns: str, addr: str, port: int, seconds: float = 2.0, cap: int = 20000) -> tuple[float, dict]:
    proc = run(in_ns(client_ns, [sys.executable, "-c", CONNECTOR, addr, str(port), str(seconds), str(cap)]), timeout=seconds + 30)
    data = json.loads(proc.stdout)
    if data["connections"] == 0:
        raise RuntimeError(f"no connection to {addr}:{port} from {client_ns} ({data['failures']} failures)")
    return data["connections"] / data["seconds"], data


def veth_pair(a: str, b: str, addr_a: str, addr_b: str) -> None:
    world.bare(a)
    world.bare(b)
    run(["ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b])
    run(["ip", "-n", a, "addr", "add", f"{addr_a}/24", "dev", "eth0"])
    run(["ip", "-n", b, "addr", "add", f"{addr_b}/24", "dev", "eth0"])
    run(["ip", "-n", a, "link", "set", "eth0", "up"])
    run(["ip", "-n", b, "link", "set", "eth0", "up"])


# the same hops as the sandbox path (WAN → router → host → bridge → endpoint), routed plainly:
# no NAT, no conntrack, no firewall — what the path itself costs without vnet's rules
CHAIN = ("bnv-w", "bnv-r", "bnv-h", "bnv-e")
CHAIN_TARGET = "10.78.9.10"


def plain_path() -> None:
    w, r, h, e = CHAIN
    for ns in CHAIN:
        world.bare(ns)
    steps = [
        ["ip", "-n", r, "link", "add", "wan", "type", "veth", "peer", "name", "eth0", "netns", w],
        ["ip", "-n", r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", h],
        ["ip", "-n", h, "link", "add", "br0", "type", "bridge"],
        ["ip", "-n", h, "link", "add", "port", "master", "br0", "type", "veth", "peer", "name", "eth0", "netns", e],
        ["ip", "-n", w, "addr", "add", "203.0.113.10/24", "dev", "eth0"],
        ["ip", "-n", r, "addr", "add", "203.0.113.1/24", "dev", "wan"],
        ["ip", "-n", r, "addr", "add", "192.0.2.1/24", "dev", "lan"],
        ["ip", "-n", h, "addr", "add", "192.0.2.2/24", "dev", "eth0"],
        ["ip", "-n", h, "addr", "add", "10.78.9.1/24", "dev", "br0"],
        ["ip", "-n", e, "addr", "add", f"{CHAIN_TARGET}/24", "dev", "eth0"],
    ]
    for dev_ns, dev in ((w, "eth0"), (r, "wan"), (r, "lan"), (h, "eth0"), (h, "br0"), (h, "port"), (e, "eth0")):
        steps.append(["ip", "-n", dev_ns, "link", "set", dev, "up"])
    steps += [
        ["ip", "-n", w, "route", "add", "default", "via", "203.0.113.1"],
        ["ip", "-n", r, "route", "add", "10.78.9.0/24", "via", "192.0.2.2"],
        ["ip", "-n", h, "route", "add", "default", "via", "192.0.2.1"],
        ["ip", "-n", e, "route", "add", "default", "via", "10.78.9.1"],
        in_ns(r, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]),
        in_ns(h, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]),
    ]
    for argv in steps:
        run(argv)


# --- nftables flowtables: can established flows be offloaded here? ----------------------------------

FLOWTABLE_NS = "bnft"


def flowtables() -> tuple[bool, str]:
    """(available, what nft said) — a flowtable on lo in a fresh namespace of the benchmark's."""
    world.bare(FLOWTABLE_NS)
    try:
        rules = "table inet bnft {\n  flowtable f {\n    hook ingress priority 0; devices = { lo };\n  }\n}\n"
        proc = run(in_ns(FLOWTABLE_NS, ["nft", "-f", "-"]), input=rules, check=False)
        said = (proc.stderr or proc.stdout).strip().splitlines()
        return proc.returncode == 0, (said[0] if said else "")
    finally:
        world.sweep([FLOWTABLE_NS])


# --- the cheapest NAT forward: one iptables DNAT rule plus masquerade --------------------------------


def cheapest_nat_rules(match_addr: str, first_port: int, last_port: int, dest: str, subnet: str, uplink: str) -> str:
    return "\n".join([
        "*nat",
        f"-A PREROUTING -d {match_addr}/32 -p tcp -m tcp --dport {first_port}:{last_port} -j DNAT --to-destination {dest}",
        f"-A POSTROUTING -s {subnet} -o {uplink} -j MASQUERADE",
        "COMMIT",
    ]) + "\n"


def hook_floor_rules(table: str, port: str, mac: str, address: str) -> str:
    """The least the two hooks that isolation and anti-spoofing take can do, beside the cheapest
    NAT: a forward filter that lets established flows through first (and accepts the rest), and
    a bridge filter that accepts the endpoint's frames by port, MAC and address in one lookup
    (and the rest too). What vnet's rules cost beyond the hooks themselves is vnet's rows against
    this one; what the hooks cost is this one against the cheapest NAT."""
    return "\n".join([
        f"table inet {table} {{",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        "    ct state established,related accept",
        "  }",
        "}",
        f"table bridge {table} {{",
        "  set ok {",
        "    type ifname . ether_addr . ipv4_addr",
        f'    elements = {{ "{port}" . {mac} . {address} }}',
        "  }",
        "  chain prerouting {",
        "    type filter hook prerouting priority filter; policy accept;",
        "    iifname . ether saddr . ip saddr @ok accept",
        "  }",
        "}",
    ]) + "\n"


# --- DHCP: when does dnsmasq answer? ------------------------------------------------------------------

CLONE_NEWNET = 0x40000000


def _discover(mac: str, xid: int, want: str) -> bytes:
    """A DHCPDISCOVER asking for `want`: what a client sends first. dnsmasq answers it with an
    offer at once since vnet's config says `no-ping` (before, the offer waited out dnsmasq's 3 s
    ping check of the address)."""
    chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
    head = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4)
    return head + chaddr + b"\0" * 192 + b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\x32\x04" + socket.inet_aton(want) + b"\xff"


def _is_answer(data: bytes, xid: int) -> bool:
    """A DHCP reply to our discover (OFFER, or an ACK/NAK)."""
    if len(data) < 244 or data[0] != 2 or struct.unpack_from("!I", data, 4)[0] != xid:
        return False
    opts, i = data[240:], 0
    while i + 1 < len(opts) and opts[i] != 255:
        if opts[i] == 0:
            i += 1
            continue
        if opts[i] == 53 and i + 2 < len(opts):
            return opts[i + 2] in (2, 5, 6)
        i += 2 + opts[i + 1]
    return False


def dhcp_answer(ns: str, ifname: str, mac: str, want: str, timeout: float = 15.0) -> threading.Thread:
    """A thread that waits for namespace `ns` and its link `ifname`, then broadcasts DHCPDISCOVERs
    for `want` from it (every 10 ms) until dnsmasq answers. The thread's `result` is the
    perf_counter time of the first answer, or None after `timeout`. Only that thread enters the
    namespace."""
    libc = ctypes.CDLL(None, use_errno=True)

    def probe() -> None:
        deadline = time.perf_counter() + timeout
        xid = 0x5EED0000 | (os.getpid() & 0xFFFF)
        path = world.NETNS_DIR / ns
        sock = None
        try:
            while time.perf_counter() < deadline:
                if sock is None:
                    if not os.path.ismount(path):
                        time.sleep(0.001)
                        continue
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        if libc.setns(fd, CLONE_NEWNET) != 0:
                            raise OSError(ctypes.get_errno(), "setns")
                    finally:
                        os.close(fd)
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    try:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
                        s.bind(("0.0.0.0", 68))
                    except OSError:  # the link is not there yet
                        s.close()
                        time.sleep(0.001)
                        continue
                    s.settimeout(0.01)
                    sock = s
                try:
                    sock.sendto(_discover(mac, xid, want), ("255.255.255.255", 67))
                except OSError:  # not up yet
                    time.sleep(0.001)
                    continue
                end = time.perf_counter() + 0.01
                while time.perf_counter() < end:
                    try:
                        data = sock.recv(2048)
                    except (socket.timeout, BlockingIOError):
                        break
                    if _is_answer(data, xid):
                        th.result = time.perf_counter()  # type: ignore[attr-defined]
                        return
        finally:
            if sock is not None:
                sock.close()

    th = threading.Thread(target=probe, name="bench-dhcp-probe", daemon=True)
    th.result = None  # type: ignore[attr-defined]
    th.start()
    return th
