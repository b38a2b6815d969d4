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
