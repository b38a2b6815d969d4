"""Real-traffic probes run inside namespaces: ping, a TCP exchange, a DHCP client.

Used by the tests, the demo and (later) `vnet check` to hold a network against its declared intent.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
from pathlib import Path

from vnet.drivers.ns import Namespace

BUSYBOX = "busybox"

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc calls this with bound/renew: configure what the server offered, like a VM would
case "$1" in
  deconfig) busybox ip addr flush dev "$interface"; busybox ip link set "$interface" up ;;
  bound|renew)
    busybox ip addr flush dev "$interface"
    busybox ip addr add "$ip/$mask" dev "$interface"
    if [ -n "$router" ]; then busybox ip route replace default via "${router%% *}" dev "$interface"; fi
    echo "$ip/$mask" > "$LEASE_OUT" ;;
esac
"""


def run_in(ns: str | None, argv: list[str], timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(Namespace(ns).argv(argv) if ns else argv, capture_output=True, text=True, timeout=timeout)


def _inside(ns: str | None, fn):
    """Run fn in a thread inside `ns`: a socket it opens belongs to that namespace."""
    if ns is None:
        return fn()
    n = Namespace(ns)
    try:
        return n.call(fn)
    finally:
        n.close()


def ping(ns: str | None, address: str, count: int = 1, timeout_s: int = 1) -> bool:
    """True when `address` answers an ICMP echo from namespace `ns`."""
    proc = run_in(ns, [BUSYBOX, "ping", "-c", str(count), "-W", str(timeout_s), address], timeout=count * timeout_s + 5)
    return proc.returncode == 0


def tcp_line(ns: str | None, address: str, port: int, timeout_s: float = 2.0) -> str | None:
    """Connect from `ns` and return the first line the server sends, or None if it cannot connect."""

    def talk() -> str | None:
        try:
            with socket.create_connection((address, port), timeout=timeout_s) as s:
                s.settimeout(timeout_s)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(256)
                    if not chunk:
                        break
                    data += chunk
                return data.decode().strip()
        except OSError:
            return None

    return _inside(ns, talk)


def dhcp_client(ns: str, ifname: str = "eth0", tries: int = 5) -> str:
    """Run busybox udhcpc once in `ns` on `ifname`; configure and return the leased address/prefix."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        lease = Path(tmp) / "lease"
        env_argv = ["env", f"LEASE_OUT={lease}", BUSYBOX, "udhcpc", "-i", ifname, "-n", "-q", "-f",
                    "-t", str(tries), "-T", "1", "-s", str(script)]
        proc = run_in(ns, env_argv, timeout=tries * 3 + 5)
        if proc.returncode != 0 or not lease.exists():
            raise RuntimeError(f"no DHCP lease in {ns} on {ifname}: {proc.stderr.strip() or proc.stdout.strip()}")
        return lease.read_text().strip()


def udp_line(ns: str | None, address: str, port: int, timeout_s: float = 2.0) -> str | None:
    """Send a datagram from `ns` and return the reply, or None when nothing answers."""

    def talk() -> str | None:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout_s)
            try:
                s.sendto(b"hello\n", (address, port))
                return s.recv(256).decode().strip()
            except OSError:
                return None

    return _inside(ns, talk)


class Listener:
    """A TCP (or UDP) server in a namespace that answers each client with the client's address."""

    def __init__(self, ns: str, port: int, address: str = "0.0.0.0", udp: bool = False):
        self.ns = Namespace(ns)
        self.udp = udp
        self.sock = self.ns.call(self._open, address, port, udp)
        import threading

        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @staticmethod
    def _open(address: str, port: int, udp: bool) -> socket.socket:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((address, port))
        if not udp:
            s.listen(16)
        return s

    def _serve(self) -> None:
        while True:
            try:
                if self.udp:
                    _, peer = self.sock.recvfrom(256)
                    if peer is None:  # shut down
                        return
                    self.sock.sendto((peer[0] + "\n").encode(), peer)
                    continue
                c, peer = self.sock.accept()
            except OSError:
                return
            with c:
                try:
                    c.sendall((peer[0] + "\n").encode())
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(timeout=2)
        self.ns.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- `vnet check`: every pair of a topology's peers, probed against its declared intent ----------

import ipaddress as _ipaddress
import json as _json
import os as _os
import random as _random
import resource as _resource
import selectors as _selectors
import struct as _struct
import threading as _threading
import time as _time
from concurrent.futures import ThreadPoolExecutor as _Pool
from dataclasses import asdict as _asdict, dataclass as _dataclass, field as _field

from vnet import intent as _intent
from vnet.drivers import ns as _nsmod

IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2  # <linux/in.h>: set DF, never fragment locally
PARALLEL = 64  # sources probed at once


@_dataclass
class Target:
    """One probe of one source: where it goes and what came back."""

    dst: str
    proto: str  # icmp | tcp | udp | mtu
    address: str
    port: int | None = None
    size: int = 0  # mtu: the whole IP packet
    reached: bool | None = None  # None: not run
    note: str = ""
    # a refusal counts as reached where the address itself answers; a forward's answer is its
    # target's listener, and a reset from the host only says the forward did not take it
    refusal_counts: bool = True


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(_struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _echo(ident: int, seq: int, payload: bytes) -> bytes:
    head = _struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return _struct.pack("!BBHHH", 8, 0, _icmp_checksum(head + payload), ident, seq) + payload


def _open_sockets(targets: list[Target]) -> dict:
    """Sockets for one source's probes, opened in the calling thread's namespace."""
    out: dict = {"tcp": {}, "mtu": {}}
    if any(t.proto == "icmp" for t in targets):
        out["icmp"] = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    if any(t.proto == "udp" for t in targets):
        out["udp"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i, t in enumerate(targets):
        if t.proto == "tcp":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            out["tcp"][i] = s
        elif t.proto == "mtu":
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            out["mtu"][i] = s
    return out


def _token(ident: int, i: int) -> bytes:
    return f"vnet-check {ident} {i}\n".encode()


def probe_from(ns: str | None, targets: list[Target], timeout: float = 1.0) -> list[Target]:
    """Run every probe of one source namespace at once (ICMP echo, TCP connect, UDP echo, a
    don't-fragment echo of a full MTU) and wait at most `timeout` for all of them. A TCP reset
    counts as reached (something at the address answered, past every firewall) unless the target
    says a refusal does not count."""
    socks = _inside(ns, lambda: _open_sockets(targets))
    ident = _random.randrange(1, 0xFFFF)
    sel = _selectors.DefaultSelector()
    pending: set[int] = set()
    try:
        for i, t in enumerate(targets):
            t.reached = False
            try:
                if t.proto == "icmp":
                    socks["icmp"].sendto(_echo(ident, i, b"vnet-check"), (t.address, 0))
                elif t.proto == "mtu":
                    payload = b"\0" * max(0, t.size - 28)
                    socks["mtu"][i].sendto(_echo(ident, i, payload), (t.address, 0))
                    sel.register(socks["mtu"][i], _selectors.EVENT_READ, ("mtu", i))
                elif t.proto == "udp":
                    socks["udp"].sendto(_token(ident, i), (t.address, t.port))
                elif t.proto == "tcp":
                    s = socks["tcp"][i]
                    err = s.connect_ex((t.address, t.port))
                    if err not in (0, 115):  # EINPROGRESS
                        t.note = _os.strerror(err)
                        continue
                    sel.register(s, _selectors.EVENT_WRITE, ("tcp", i))
                pending.add(i)
            except OSError as exc:  # no route, message too long (mtu): not reached
                t.note = exc.strerror or str(exc)
        if "icmp" in socks:
            sel.register(socks["icmp"], _selectors.EVENT_READ, ("icmp", None))
        if "udp" in socks:
            sel.register(socks["udp"], _selectors.EVENT_READ, ("udp", None))
        deadline = _time.monotonic() + timeout
        resent = False
        while pending:
            left = deadline - _time.monotonic()
            if left <= 0:
                break
            if not resent and left < timeout / 2:  # one retry for datagrams lost to a cold ARP cache
                resent = True
                for i in list(pending):
                    t = targets[i]
                    try:
                        if t.proto == "udp":
                            socks["udp"].sendto(_token(ident, i), (t.address, t.port))
                        elif t.proto == "icmp":
                            socks["icmp"].sendto(_echo(ident, i, b"vnet-check"), (t.address, 0))
                    except OSError:
                        pass
            for key, _ in sel.select(min(left, timeout / 2)):
                kind, i = key.data
                s = key.fileobj
                if kind == "tcp":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err == 0 or (err == 111 and targets[i].refusal_counts):  # connected, or refused by the peer itself
                        targets[i].reached = True
                        targets[i].note = "" if err == 0 else "refused"
                    elif err == 111:
                        targets[i].note = "refused by the host: the forward did not take it"
                    else:
                        targets[i].note = _os.strerror(err)
                    pending.discard(i)
                    sel.unregister(s)
                elif kind == "udp":
                    # the reply echoes the token: a host answering from another of its
                    # addresses (the one facing the prober) still counts
                    try:
                        data, _ = s.recvfrom(256)
                    except OSError:
                        continue
                    words = data.split()
                    if len(words) == 3 and words[0] == b"vnet-check" and words[1] == str(ident).encode():
                        j = int(words[2])
                        if j in pending:
                            targets[j].reached = True
                            pending.discard(j)
                else:  # icmp, mtu: an echo reply with our id
                    try:
                        data, peer = s.recvfrom(65535)
                    except OSError:
                        continue
                    hl = (data[0] & 0x0F) * 4
                    if len(data) < hl + 8:
                        continue
                    rtype, _, _, rid, seq = _struct.unpack("!BBHHH", data[hl : hl + 8])
                    if rtype != 0 or rid != ident or seq >= len(targets):
                        continue
                    if targets[seq].address == peer[0] and seq in pending:
                        targets[seq].reached = True
                        pending.discard(seq)
        for i in pending:
            if not targets[i].note:
                targets[i].note = "no answer"
    finally:
        sel.close()
        for s in [socks.get("icmp"), socks.get("udp"), *socks["tcp"].values(), *socks["mtu"].values()]:
            if s is not None:
                s.close()
    return targets


class Responders:
    """TCP and UDP listeners on the probe ports, in each destination's namespace, served by one
    thread. A port something else listens on already is left to it (it answers just as well)."""

    def __init__(self) -> None:
        self.sel = _selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.busy: list[tuple[str | None, str, int]] = []
        r, w = socket.socketpair()
        self._wake = (r, w)
        self.sel.register(r, _selectors.EVENT_READ, None)
        self._thread: _threading.Thread | None = None

    def add(self, ns: str | None, proto: str, port: int) -> None:
        def open_() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            if proto == "tcp":
                s.listen(4096)
            s.setblocking(False)
            return s

        try:
            s = _inside(ns, open_)
        except OSError:
            self.busy.append((ns, proto, port))
            return
        self.socks.append(s)
        self.sel.register(s, _selectors.EVENT_READ, proto)

    def start(self) -> None:
        self._thread = _threading.Thread(target=self._serve, daemon=True, name="vnet-check-responders")
        self._thread.start()

    def _serve(self) -> None:
        while True:
            for key, _ in self.sel.select():
                if key.data is None:
                    return
                s = key.fileobj
                try:
                    if key.data == "udp":
                        data, peer = s.recvfrom(256)
                        s.sendto(data, peer)  # the prober's token, back
                    else:
                        c, _ = s.accept()
                        c.close()
                except OSError:
                    continue

    def close(self) -> None:
        self._wake[1].send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=2)
        for s in [*self.socks, *self._wake]:
            s.close()
        self.sel.close()


def _addresses(ns: str | None, ifname: str | None = None) -> list[tuple[str, str]]:
    """(interface, IPv4 address) of the namespace's global addresses."""
    argv = ["ip", "-j", "-4", "addr", "show"] + (["dev", ifname] if ifname else [])
    proc = run_in(ns, argv, timeout=5)
    if proc.returncode != 0:
        return []
    out = []
    for link in _json.loads(proc.stdout or "[]"):
        for a in link.get("addr_info", []):
            if a.get("scope") == "global":
                out.append((link["ifname"], a["local"]))
    return out


def host_address(ns: str | None) -> str | None:
    """The host's own address: the first address on the interface of its default route."""
    proc = run_in(ns, ["ip", "-j", "-4", "route", "show", "default"], timeout=5)
    routes = _json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
    for r in routes:
        for dev, addr in _addresses(ns, r.get("dev")):
            return addr
    return None


def sandbox_outside(netns: str | None) -> tuple[str, str] | None:
    """(namespace, address) of the sandbox's internet when `netns` is a sandbox's host."""
    from vnet import sandbox

    if not netns or not netns.endswith("-host"):
        return None
    wan = netns[: -len("-host")] + "-wan"
    if not _nsmod.exists(wan):
        return None
    proc = run_in(wan, ["ip", "-j", "link", "show", "lo"], timeout=5)
    alias = (_json.loads(proc.stdout or "[{}]") or [{}])[0].get("ifalias", "")
    if not alias.startswith(sandbox.MARK + ":"):
        return None
    addrs = _addresses(wan)
    return wan, (addrs[0][1] if addrs else sandbox.WAN_ADDR)


@_dataclass
class Result:
    src: str
    dst: str
    proto: str
    port: int | None
    expected: bool
    observed: bool | None  # None: not probed
    reason: str
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.observed is None or self.observed == self.expected


@_dataclass
class Report:
    topology: str
    peers: dict[str, dict]
    results: list[Result]
    mtu: list[dict]
    skipped: list[tuple[str, str]]
    seconds: float
    vms: list[dict] = _field(default_factory=list)
    warnings: list[str] = _field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results) and all(m["reached"] for m in self.mtu if m["reached"] is not None)

    @property
    def mismatches(self) -> list[Result]:
        return [r for r in self.results if not r.ok]

    def to_json(self) -> dict:
        return {
            "topology": self.topology,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "peers": self.peers,
            "results": [{**_asdict(r), "ok": r.ok} for r in self.results],
            "mtu": self.mtu,
            "vms": self.vms,
            "warnings": self.warnings,
            "skipped": [{"what": w, "why": y} for w, y in self.skipped],
            "mismatches": [_asdict(r) for r in self.mismatches],
        }


def _vm_address(topo, state: Path, peer: _intent.Peer) -> str | None:
    if peer.address:
        return peer.address
    from vnet import qemuargs
    from vnet.drivers import dnsmasq

    mac = qemuargs.nic_mac(topo, peer.vm, peer.nic)
    for lease in dnsmasq.leases(state / topo.name):
        if lease.mac == mac:
            return lease.address
    return None


def _vm_agent(state: Path, topo, vm: str):
    from vnet import guest, qemuargs

    path = qemuargs.files(state / topo.name, vm)["agent"]
    if not Path(path).exists():
        return None
    agent = guest.Agent(path)
    try:
        rc, out = agent.run("echo ready", timeout=2)
        return agent if rc == 0 and out.endswith("ready") else None
    except (OSError, TimeoutError, ConnectionError, ValueError):
        return None


def _probe_vm(agent, targets: list[Target], timeout: float) -> list[Target]:
    """ICMP probes from inside a guest, all at once, through its agent (busybox ping)."""
    lines = []
    for i, t in enumerate(targets):
        if t.proto == "icmp":
            lines.append(f"( ping -c1 -W{max(1, int(timeout))} {t.address} >/dev/null 2>&1 && echo R{i} ) &")
        else:
            t.note = "not probed: the guest agent probes ICMP only"
    lines.append("wait")
    try:
        rc, out = agent.run("\n".join(lines), timeout=timeout + 10)
    except (OSError, TimeoutError, ConnectionError) as exc:
        for t in targets:
            t.note = f"guest agent: {exc}"
        return targets
    seen = {w for w in out.split()}
    for i, t in enumerate(targets):
        if t.proto == "icmp":
            t.reached = f"R{i}" in seen
    return targets


def _arp(ns: str | None, bridge: str, address: str, timeout: float) -> bool:
    """Whether `address` answers ARP on `bridge` (from the host, with no address of its own needed)."""
    proc = run_in(ns, [BUSYBOX, "arping", "-D", "-c", "1", "-w", str(max(1, int(timeout))), "-I", bridge, address],
                  timeout=timeout + 5)
    return "Received 1 repl" in proc.stdout or "Received 1 response" in proc.stdout


def run(topo, netns: str | None = None, state_dir: Path | str = "/run/vnet", outside: str | None | bool = True,
        timeout: float = 1.0) -> Report:
    """Probe every pair the topology's intent names and compare with it. `outside`: True finds the
    sandbox's internet when `netns` is a sandbox host (else skips it), a namespace name uses that
    namespace, False skips it."""
    t0 = _time.monotonic()
    state = Path(state_dir)
    soft, hard = _resource.getrlimit(_resource.RLIMIT_NOFILE)
    if soft < min(hard, 65536):  # thousands of TCP probes are open at once
        _resource.setrlimit(_resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    out_ns: tuple[str, str] | None = None
    if outside is True:
        out_ns = sandbox_outside(netns)
    elif isinstance(outside, str):
        addrs = _addresses(outside)
        out_ns = (outside, addrs[0][1]) if addrs else None
    it = _intent.intent(topo, outside=out_ns is not None)
    skipped = list(it.skipped)

    # where each peer lives and which address it answers on
    where: dict[str, tuple[str | None, str | None]] = {}  # peer -> (namespace, address)
    host_addr = host_address(netns)
    agents: dict[str, object] = {}
    vms: list[dict] = []
    for p in it.peers.values():
        if p.kind == "endpoint":
            addr = p.address
            if not _nsmod.exists(p.netns):
                skipped.append((p.name, f"namespace {p.netns} does not exist (not applied?)"))
                where[p.name] = (None, None)
                continue
            if addr is None:
                found = _addresses(p.netns, p.ifname)
                addr = found[0][1] if found else None
                if addr is None:
                    skipped.append((p.name, f"no address on {p.ifname} in {p.netns} (it has none declared, and no DHCP client ran)"))
            where[p.name] = (p.netns, addr)
        elif p.kind == "vm":
            addr = _vm_address(topo, state, p)
            where[p.name] = (None, addr)
            if p.vm not in agents:
                agents[p.vm] = _vm_agent(state, topo, p.vm)
            if agents[p.vm] is None:
                from vnet.facts import bridge_name

                alive = _arp(netns, bridge_name(topo, p.network), addr, timeout) if addr else None
                vms.append({"peer": p.name, "address": addr, "agent": False, "arp": alive})
                skipped.append((p.name, "no guest agent: probed as a destination only, and by ARP from the bridge"))
            else:
                vms.append({"peer": p.name, "address": addr, "agent": True, "arp": None})
            if addr is None:
                skipped.append((p.name, "address unknown: no reservation and no lease"))
        elif p.kind == "gateway":
            where[p.name] = (netns, p.address)
        elif p.kind == "host":
            where[p.name] = (netns, host_addr)
        elif p.kind == "outside":
            where[p.name] = out_ns
        elif p.kind == "forward":
            where[p.name] = (netns, host_addr)

    # listeners on the probe ports in each destination's namespace
    responders = Responders()
    wanted: set[tuple[str | None, str, int]] = set()
    for e in it.expects:
        if e.proto == "icmp":
            continue
        dst = it.peers[e.dst]
        if dst.kind == "forward":
            target = it.peers.get(dst.target) if dst.target else None
            if target is not None and target.kind == "endpoint" and where.get(target.name, (None,))[0]:
                wanted.add((where[target.name][0], dst.proto, dst.target_port))
        elif dst.kind in ("endpoint", "gateway", "host", "outside") and where.get(e.dst, (None, None))[0] is not None:
            wanted.add((where[e.dst][0], e.proto, e.port))
        elif dst.kind in ("gateway", "host") and netns is None:
            wanted.add((None, e.proto, e.port))
    for ns, proto, port in sorted(wanted, key=lambda w: (w[0] or "", w[1], w[2])):
        responders.add(ns, proto, port)
    responders.start()

    # the probes, grouped by source
    by_src: dict[str, list[tuple[_intent.Expect, Target]]] = {}
    notes: dict[int, str] = {}
    for e in it.expects:
        dst_addr = where.get(e.dst, (None, None))[1]
        src_ns = where.get(e.src, (None, None))
        if dst_addr is None or (it.peers[e.src].kind != "vm" and src_ns[1] is None and it.peers[e.src].kind != "host"):
            continue
        if it.peers[e.src].kind == "vm" and agents.get(it.peers[e.src].vm) is None:
            continue
        if it.peers[e.dst].kind == "vm" and e.proto == "udp":
            continue  # nothing listens in a guest; an unconnected UDP socket hears no refusal
        by_src.setdefault(e.src, []).append((e, Target(e.dst, e.proto, dst_addr, e.port, refusal_counts=it.peers[e.dst].kind != "forward")))
    mtu_targets: dict[str, list[tuple[_intent.MtuProbe, Target]]] = {}
    for m in it.mtu:
        src, dst = where.get(m.src, (None, None)), where.get(m.dst, (None, None))
        if it.peers[m.src].kind == "endpoint" and src[0] and dst[1]:
            mtu_targets.setdefault(m.src, []).append((m, Target(m.dst, "mtu", dst[1], size=m.mtu)))

    def one(src: str) -> None:
        pairs = by_src.get(src, []) + mtu_targets.get(src, [])
        targets = [t for _, t in pairs]
        peer = it.peers[src]
        if peer.kind == "vm":
            _probe_vm(agents[peer.vm], targets, timeout)
        else:
            probe_from(where[src][0], targets, timeout)

    try:
        sources = sorted(set(by_src) | set(mtu_targets))
        with _Pool(max_workers=max(1, min(PARALLEL, len(sources)))) as pool:
            list(pool.map(one, sources))
    finally:
        responders.close()

    results: list[Result] = []
    for src, pairs in by_src.items():
        for e, t in pairs:
            results.append(Result(e.src, e.dst, e.proto, e.port, e.reachable, t.reached, e.reason, t.note))
    order = {name: i for i, name in enumerate(it.peers)}
    results.sort(key=lambda r: (order[r.src], order[r.dst], _intent.PROTOS.index(r.proto)))
    mtu = []
    for m in it.mtu:
        t = next((t for mm, t in mtu_targets.get(m.src, []) if mm is m), None)
        mtu.append({"network": m.network, "src": m.src, "dst": m.dst, "mtu": m.mtu, "reason": m.reason,
                    "reached": t.reached if t else None, "note": t.note if t else "not probed"})
    peers_json = {name: {"kind": p.kind, "network": p.network, "address": where.get(name, (None, None))[1] if where.get(name) else None}
                  for name, p in it.peers.items()}
    return Report(topo.name, peers_json, results, mtu, skipped, _time.monotonic() - t0, vms, _neighbour_warning(it))


def _neighbour_warning(it: _intent.Intent) -> list[str]:
    """Probing every pair of a network needs a neighbour entry per pair, and the kernel's table is
    shared by all namespaces (gc_thresh3, 1024 by default): say so before mismatches confuse."""
    members: dict[str | None, int] = {}
    for p in it.peers.values():
        if p.kind in ("endpoint", "vm"):
            members[p.network] = members.get(p.network, 0) + 1
    need = sum(m * m for m in members.values())
    try:
        limit = int(Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3").read_text())
    except (OSError, ValueError):
        return []
    if need <= limit:
        return []
    return [f"probing every pair needs about {need} ARP entries, more than the kernel's neighbour table holds "
            f"(net.ipv4.neigh.default.gc_thresh3 = {limit}, shared by all namespaces): probes between endpoints "
            "may fail for that reason alone; raise gc_thresh2/3 or split the network"]


def render(report: Report, console=None) -> None:
    """The matrix (sources down, destinations across; one mark per protocol, ICMP TCP UDP), then
    each mismatch with the setting that decides it."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    srcs = list(dict.fromkeys(r.src for r in report.results))
    dsts = [d for d in report.peers if any(r.dst == d for r in report.results)]
    cells: dict[tuple[str, str], dict[str, Result]] = {}
    for r in report.results:
        cells.setdefault((r.src, r.dst), {})[r.proto] = r
    table = Table(title=f"vnet check {report.topology}: ICMP TCP UDP per pair (✓ reachable, · blocked, ! not as declared, - not probed)")
    table.add_column("from \\ to")
    for d in dsts:
        table.add_column(d, justify="center")
    for s in srcs:
        row = [s]
        for d in dsts:
            got = cells.get((s, d), {})
            marks = []
            for proto in _intent.PROTOS:
                r = got.get(proto)
                if r is None:
                    marks.append(" ")
                elif r.observed is None:
                    marks.append("[dim]-[/]")
                elif not r.ok:
                    marks.append("[bold red]![/]")
                else:
                    marks.append("[green]✓[/]" if r.observed else "[dim]·[/]")
            row.append("".join(marks))
        table.add_row(*row)
    console.print(table)
    for m in report.mtu:
        state = {True: "[green]passes[/]", False: "[bold red]FAILS[/]", None: "[dim]not probed[/]"}[m["reached"]]
        console.print(f"MTU {m['network']}: {m['mtu']} bytes, don't fragment, {m['src']} → {m['dst']}: {state}"
                      + ("" if m["reached"] is not False else f" ({m['note']}; {m['reason']})"))
    for v in report.vms:
        if not v["agent"]:
            console.print(f"VM {v['peer']}: no guest agent; ARP from the bridge: "
                          + {True: "answers", False: "[red]no answer[/]", None: "address unknown"}[v["arp"]])
    for w in report.warnings:
        console.print(f"[yellow]warning: {w}[/]")
    for what, why in report.skipped:
        console.print(f"[dim]skipped {what}: {why}[/]")
    for r in report.mismatches:
        port = f":{r.port}" if r.port else ""
        console.print(f"[red]✗ {r.src} → {r.dst} {r.proto}{port}: expected {'reachable' if r.expected else 'blocked'}, "
                      f"got {'reachable' if r.observed else 'blocked'}{f' ({r.note})' if r.note and not r.observed else ''}[/] — {r.reason}")
    n = len(report.results)
    bad = len(report.mismatches) + sum(1 for m in report.mtu if m["reached"] is False)
    console.print(f"{n} probes in {report.seconds:.1f}s: " + ("[green]all as declared[/]" if report.ok else f"[bold red]{bad} not as declared[/]"))


def main(argv: list[str] | None = None) -> int:
    """python -m vnet.check FILE [-o json] [--netns NS] [--state-dir DIR] [--no-outside]."""
    import argparse
    import sys

    from vnet import ops, spec
    from vnet.errors import SpecError, VnetError

    p = argparse.ArgumentParser(prog="python -m vnet.check", description="probe traffic against the declared intent")
    p.add_argument("file")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--netns")
    p.add_argument("--state-dir", default="/run/vnet")
    p.add_argument("--outside", help="namespace that plays the outside (default: the sandbox's internet, if any)")
    p.add_argument("--no-outside", action="store_true")
    p.add_argument("--timeout", type=float, default=1.0)
    a = p.parse_args(argv)
    try:
        topo = spec.load(a.file)
        outside: bool | str = False if a.no_outside else (a.outside or True)
        report = ops.check(topo, netns=a.netns, state_dir=a.state_dir, outside=outside, timeout=a.timeout)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 2
    except VnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if a.output == "json":
        print(_json.dumps(report.to_json(), indent=2))
    else:
        render(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
