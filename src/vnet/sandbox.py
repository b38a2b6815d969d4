"""A throwaway world of namespaces to try vnet in without touching the machine.

    NAME-wan  (the internet: 203.0.113.10 and 2001:db8:ffff::10, ICMP and a TCP "who am I"
       │       responder on port 8080, both families)
       │ 203.0.113.0/24, 2001:db8:ffff::/64
    NAME-lan  (the home router: 192.0.2.1, DHCP and DNS by dnsmasq, routes between LAN and WAN;
       │       advertises 2001:db8:1::/64 on the LAN, for SLAAC, and routes IPv6 too)
       │ 192.0.2.0/24, 2001:db8:1::/64
    NAME-host (plays the host vnet changes: eth0 = 192.0.2.2/24, default route via 192.0.2.1;
               IPv6 address and default route from the LAN's router advertisements)

The router does not masquerade: the responder sees real source addresses, so a test can tell
whether vnet's NAT did its job. It routes the private ranges back to the host, so without vnet's
firewall the internet could open connections to vnet's networks — the tests prove it cannot. For
IPv6 it routes fd00::/8 and the rest of 2001:db8::/32 to the host (by its link-local address), the
way an upstream router would route a prefix delegated to it: so `nat6: false` can be tested.

With `hosts=N` (`vnet sandbox create NAME --hosts 3`) there are N hosts instead of NAME-host, for
overlays that span several machines, each on a subnet of its own so the underlay is routed:

    NAME-lan  (routes between the hosts' subnets and the WAN; DNS for every host)
       │ 198.18.K.0/24 (router 198.18.K.1)
    NAME-hK   (K = 1..N: eth0 = 198.18.K.2/24, default route via 198.18.K.1)
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from vnet.drivers import ns as nsmod
from vnet.drivers import process
from vnet.drivers.ns import Namespace
from vnet.engine import DEFAULT_STATE_DIR, require_net_admin
from vnet.errors import VnetError

LAN_ROUTER = "192.0.2.1"
HOST_ADDR = "192.0.2.2"
WAN_ROUTER = "203.0.113.1"
WAN_ADDR = "203.0.113.10"
WAN_PORT = 8080
DHCP_RANGE = ("192.0.2.100", "192.0.2.199")
LAN6 = "2001:db8:1::/64"  # advertised to the host (SLAAC)
LAN_ROUTER6 = "2001:db8:1::1"
WAN_ROUTER6 = "2001:db8:ffff::1"
WAN_ADDR6 = "2001:db8:ffff::10"
ROUTED6 = ("fd00::/8", "2001:db8::/32")  # routed to the host (more specific LAN and WAN routes win)
DNS_NAME = "internet.test"  # a name only the LAN's resolver knows
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
MARK = "vnet-sandbox"
MAX_HOSTS = 9


def host_subnet(k: int) -> tuple[str, str]:
    """(router, host) addresses of host k's subnet, 198.18.k.0/24, in a sandbox with --hosts."""
    return f"198.18.{k}.1", f"198.18.{k}.2"
ETC_NETNS = Path("/etc/netns")

# serves one line per connection: the address the connection came from
RESPONDER = """
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # both families on one socket
s.bind(("::", int(sys.argv[1]))); s.listen(64)
while True:
    c, peer = s.accept()
    try: c.sendall((peer[0].removeprefix("::ffff:") + "\\n").encode())
    finally: c.close()
"""


@dataclass(frozen=True)
class Sandbox:
    name: str
    state: Path
    hosts: int = 0  # 0: one host, NAME-host; N: NAME-h1 … NAME-hN

    @property
    def host(self) -> str:
        return f"{self.name}-h1" if self.hosts else f"{self.name}-host"

    @property
    def host_names(self) -> tuple[str, ...]:
        """Every namespace that plays a host."""
        return tuple(f"{self.name}-h{k}" for k in range(1, self.hosts + 1)) if self.hosts else (self.host,)

    def underlay(self, host: str) -> str:
        """The address of a host's eth0."""
        if not self.hosts:
            return HOST_ADDR
        return host_subnet(self.host_names.index(host) + 1)[1]

    @property
    def lan(self) -> str:
        return f"{self.name}-lan"

    @property
    def wan(self) -> str:
        return f"{self.name}-wan"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (*self.host_names, self.lan, self.wan)


def _ip(ns: str, *args: str) -> None:
    proc = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise VnetError(f"sandbox: ip -n {ns} {' '.join(args)}: {proc.stderr.strip()}")


def _spawn(ns: str, argv: list[str], pidfile: Path, log: Path) -> None:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            Namespace(ns).argv(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    # the start time names this very process: a pid reused by another one is never signalled
    pidfile.write_text(f"{proc.pid} {process.start_time(proc.pid)}\n")


def _wait_listening(ns: str, port: int, proto: str = "t", timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", ns, "ss", f"-{proto}ln"], capture_output=True, text=True).stdout
        if f":{port} " in out:
            return
        time.sleep(0.05)
    raise VnetError(f"sandbox: nothing listens on port {port} in {ns}")


_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def check_name(name: str) -> str:
    """A sandbox name becomes namespace names and a directory under the state directory: a
    plain word, so that no name (`../../victim`, `a/b`) reaches outside them."""
    if not _NAME_RE.fullmatch(name):
        raise VnetError(
            f"sandbox name {name!r} is not valid — use lower-case letters, digits, '_' or '-', starting with a letter, at most 32 characters"
        )
    return name


def create(name: str, state_dir: Path | str = DEFAULT_STATE_DIR, host_dhcp: bool = False, hosts: int | None = None) -> Sandbox:
    """The sandbox; with `hosts`, that many hosts on a routed underlay instead of one."""
    if hosts is not None and not 1 <= hosts <= MAX_HOSTS:
        raise VnetError(f"sandbox {name}: --hosts must be 1 to {MAX_HOSTS}, not {hosts}")
    if hosts and host_dhcp:
        raise VnetError(f"sandbox {name}: --dhcp and --hosts do not go together; the hosts take fixed addresses")
    check_name(name)
    require_net_admin("sandbox create")
    sb = Sandbox(name, Path(state_dir) / "sandbox" / name, hosts or 0)
    taken = [n for n in sb.namespaces if nsmod.exists(n)]
    if taken:
        raise VnetError(f"sandbox {name}: namespace {taken[0]} exists already — `vnet sandbox destroy {name}` or pick another name")
    sb.state.mkdir(parents=True, exist_ok=True)
    try:
        _build(sb, host_dhcp)
    except BaseException:
        destroy(name, state_dir)
        raise
    return sb


def _build(sb: Sandbox, host_dhcp: bool) -> None:
    for n in sb.namespaces:
        nsmod.create(n).close()
        _ip(n, "link", "set", "lo", "up", "alias", f"{MARK}:{sb.name}")
    if sb.hosts:
        _build_hosts(sb)
        return
    _ip(sb.lan, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", sb.host)
    _ip(sb.lan, "link", "add", "wan", "type", "veth", "peer", "name", "eth0", "netns", sb.wan)
    _ip(sb.lan, "addr", "add", f"{LAN_ROUTER}/24", "dev", "lan")
    _ip(sb.lan, "addr", "add", f"{WAN_ROUTER}/24", "dev", "wan")
    _ip(sb.lan, "addr", "add", f"{LAN_ROUTER6}/64", "dev", "lan", "nodad")
    _ip(sb.lan, "addr", "add", f"{WAN_ROUTER6}/64", "dev", "wan", "nodad")
    for dev in ("lan", "wan"):
        _ip(sb.lan, "link", "set", dev, "up")

    def router() -> None:  # the sandbox's own namespace: its host-wide switches are the router's
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        Path("/proc/sys/net/ipv6/conf/all/forwarding").write_text("1\n")

    Namespace(sb.lan).call(router)
    for prefix in PRIVATE:
        _ip(sb.lan, "route", "add", prefix, "via", HOST_ADDR)
    _ip(sb.wan, "addr", "add", f"{WAN_ADDR}/24", "dev", "eth0")
    _ip(sb.wan, "addr", "add", f"{WAN_ADDR6}/64", "dev", "eth0", "nodad")
    _ip(sb.wan, "link", "set", "eth0", "up")
    _ip(sb.wan, "route", "add", "default", "via", WAN_ROUTER)
    _ip(sb.wan, "-6", "route", "add", "default", "via", WAN_ROUTER6)

    _spawn(
        sb.lan,
        [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--interface=lan", "--bind-interfaces", "--except-interface=lo",
            f"--dhcp-range={DHCP_RANGE[0]},{DHCP_RANGE[1]},255.255.255.0,1h",
            f"--dhcp-option=option:router,{LAN_ROUTER}", f"--dhcp-option=option:dns-server,{LAN_ROUTER}",
            f"--host-record={DNS_NAME},{WAN_ADDR}", "--local=/test/", f"--dhcp-leasefile={sb.state / 'lan.leases'}",
            "--dhcp-authoritative", f"--pid-file={sb.state / 'dnsmasq.pid.inner'}",
            # IPv6: router advertisements of the LAN's prefix (SLAAC, no DHCPv6), the router as
            # the default route
            "--enable-ra", "--dhcp-range=::,constructor:lan,ra-only,64,1h",
        ],
        sb.state / "dnsmasq.pid",
        sb.state / "dnsmasq.log",
    )
    _spawn(sb.wan, [sys.executable, "-c", RESPONDER, str(WAN_PORT)], sb.state / "responder.pid", sb.state / "responder.log")

    # the host's resolver is the LAN's, as `ip netns exec` shows it (and as vnet's DNS forwards to)
    resolv = ETC_NETNS / sb.host / "resolv.conf"
    resolv.parent.mkdir(parents=True, exist_ok=True)
    resolv.write_text(f"nameserver {LAN_ROUTER}\n")
    _ip(sb.host, "link", "set", "eth0", "up")
    if host_dhcp:
        _wait_listening(sb.lan, 67, "u")
        from vnet import check

        check.dhcp_client(sb.host, "eth0")
    else:
        _ip(sb.host, "addr", "add", f"{HOST_ADDR}/24", "dev", "eth0")
        _ip(sb.host, "route", "add", "default", "via", LAN_ROUTER)
    _wait_listening(sb.wan, WAN_PORT)
    _wait_listening(sb.lan, 53, "u")
    for n in sb.namespaces:
        settle(n)
    # the host takes its IPv6 address and default route from the LAN's advertisements; the LAN
    # routes the prefixes vnet may route (nat6: false) to the host's link-local address
    wait_ipv6(sb.host)
    link_local = _link_local(sb.host, "eth0")
    for prefix in ROUTED6:
        _ip(sb.lan, "-6", "route", "add", prefix, "via", link_local, "dev", "lan")



def _addrs6(ns: str, dev: str) -> list[dict]:
    import json

    out = subprocess.run(["ip", "-n", ns, "-j", "-6", "addr", "show", "dev", dev], capture_output=True, text=True).stdout
    return [i for a in json.loads(out or "[]") for i in a.get("addr_info", [])]


def _link_local(ns: str, dev: str) -> str:
    for i in _addrs6(ns, dev):
        if i.get("scope") == "link":
            return i["local"]
    raise VnetError(f"sandbox: {dev} in {ns} has no IPv6 link-local address")


def host_ipv6(ns: str, dev: str = "eth0") -> str | None:
    """The global IPv6 address `dev` took from the LAN's advertisements, if it has one."""
    for i in _addrs6(ns, dev):
        if i.get("scope") == "global" and not i.get("tentative"):
            return i["local"]
    return None


def default_route6(ns: str) -> str | None:
    """The device of the IPv6 default route of `ns`, or None without one."""
    import json

    out = subprocess.run(["ip", "-n", ns, "-j", "-6", "route", "show", "default"], capture_output=True, text=True).stdout
    routes = json.loads(out or "[]")
    return routes[0].get("dev") if routes else None


def wait_ipv6(ns: str, dev: str = "eth0", timeout: float = 10.0) -> tuple[str, str]:
    """(address, default route's device) once `dev` has both from router advertisements."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        addr, route = host_ipv6(ns, dev), default_route6(ns)
        if addr and route:
            return addr, route
        time.sleep(0.1)
    raise VnetError(f"sandbox: {dev} in {ns} took no IPv6 address and default route from the LAN within {timeout:g}s")


def _build_hosts(sb: Sandbox) -> None:
    """N hosts, each on its own subnet behind the router: a routed underlay."""
    _ip(sb.lan, "link", "add", "wan", "type", "veth", "peer", "name", "eth0", "netns", sb.wan)
    _ip(sb.lan, "addr", "add", f"{WAN_ROUTER}/24", "dev", "wan")
    _ip(sb.lan, "link", "set", "wan", "up")
    listen = ["--interface=wan"]
    for k, host in enumerate(sb.host_names, 1):
        router, addr = host_subnet(k)
        dev = f"h{k}"
        _ip(sb.lan, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", host)
        _ip(sb.lan, "addr", "add", f"{router}/24", "dev", dev)
        _ip(sb.lan, "link", "set", dev, "up")
        listen.append(f"--interface={dev}")
        _ip(host, "addr", "add", f"{addr}/24", "dev", "eth0")
        _ip(host, "link", "set", "eth0", "up")
        _ip(host, "route", "add", "default", "via", router)
        resolv = ETC_NETNS / host / "resolv.conf"
        resolv.parent.mkdir(parents=True, exist_ok=True)
        resolv.write_text(f"nameserver {router}\n")
    Namespace(sb.lan).call(lambda: Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n"))
    _ip(sb.wan, "addr", "add", f"{WAN_ADDR}/24", "dev", "eth0")
    _ip(sb.wan, "link", "set", "eth0", "up")
    _ip(sb.wan, "route", "add", "default", "via", WAN_ROUTER)
    _spawn(
        sb.lan,
        [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            *listen, "--bind-interfaces", "--except-interface=lo",
            f"--host-record={DNS_NAME},{WAN_ADDR}", "--local=/test/", f"--pid-file={sb.state / 'dnsmasq.pid.inner'}",
        ],
        sb.state / "dnsmasq.pid",
        sb.state / "dnsmasq.log",
    )
    _spawn(sb.wan, [sys.executable, "-c", RESPONDER, str(WAN_PORT)], sb.state / "responder.pid", sb.state / "responder.log")
    _wait_listening(sb.wan, WAN_PORT)
    _wait_listening(sb.lan, 53, "u")
    for n in sb.namespaces:
        settle(n)


def found(name: str) -> Sandbox:
    """The sandbox as it stands: with hosts NAME-h1 … when those exist."""
    k = 0
    while k < MAX_HOSTS and nsmod.exists(f"{name}-h{k + 1}"):
        k += 1
    return Sandbox(name, Path(), k)


def settle(ns: str, timeout: float = 5.0) -> None:
    """Wait until the namespace stops changing by itself: IPv6 duplicate address detection done,
    and the kernel's link watcher through with new links (a tap nobody has open loses its carrier
    at once, but its operational state, and the IPv6 routes that follow it, only when the watcher
    runs, up to a second later: until then it is up, without carrier, and not yet NO-CARRIER)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "-n", ns, "-6", "addr", "show", "tentative"], capture_output=True, text=True).stdout
        if not out.strip() and not _links_in_transit(ns):
            return
        time.sleep(0.1)


def _links_in_transit(ns: str) -> bool:
    import json

    out = subprocess.run(["ip", "-n", ns, "-j", "link", "show"], capture_output=True, text=True).stdout
    for link in json.loads(out or "[]"):
        flags = link.get("flags", [])
        if "UP" in flags and "LOWER_UP" not in flags and "NO-CARRIER" not in flags:
            return True
    return False


def _stop(pidfile: Path) -> None:
    try:
        pid_text, started = pidfile.read_text().split()
        pid = int(pid_text)
    except (FileNotFoundError, ValueError):
        return
    if str(process.start_time(pid)) == started:
        process.stop_pids([pid], timeout=3, group=True)  # the session leader is nsenter; its child shares the group
    pidfile.unlink(missing_ok=True)


def destroy_topologies(host: str, state_dir: Path | str) -> list[str]:
    """Destroy every topology applied to the sandbox host (found by its claim in vnet's state):
    their daemons and the namespaces they made would otherwise outlive the sandbox."""
    from vnet import statedir
    from vnet.engine import Engine

    done = []
    if not nsmod.exists(host):
        return done
    for claim in sorted(statedir.target_root(state_dir, host).glob("*/claim.json")):
        Engine(claim.parent.name, netns=host, state_dir=state_dir).destroy(force=True)
        done.append(claim.parent.name)
    return done


def destroy(name: str, state_dir: Path | str = DEFAULT_STATE_DIR) -> None:
    check_name(name)
    require_net_admin("sandbox destroy")
    sb = Sandbox(name, Path(state_dir) / "sandbox" / name, found(name).hosts)
    for host in sb.host_names:
        destroy_topologies(host, state_dir)
    for pidfile in ("dnsmasq.pid", "responder.pid"):
        _stop(sb.state / pidfile)
    for n in sb.namespaces:
        if nsmod.exists(n):
            links = Namespace(n)
            try:
                lo = links.nl.link("lo")
                alias = lo.alias if lo else None
            finally:
                links.close()
            if alias != f"{MARK}:{name}":
                raise VnetError(f"namespace {n} is not sandbox {name}'s; not removing it")
            nsmod.remove(n)
    for host in sb.host_names:
        resolv = ETC_NETNS / host / "resolv.conf"
        if resolv.exists():
            resolv.unlink()
            resolv.parent.rmdir()
    if sb.state.exists():
        for f in sb.state.iterdir():
            f.unlink()
        sb.state.rmdir()
