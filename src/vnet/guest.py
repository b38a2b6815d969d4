"""A tiny guest for demos and tests, built from Debian packages already on the machine.

The Debian cloud kernel (`linux-image-cloud-amd64`) plus an initramfs holding static busybox, the
virtio-net modules, a DHCP client script and a command agent on the second serial port — and,
where the machine has ISC dhclient, that binary with the C library it links (busybox has no
DHCPv6 client): `dhclient6 <dev>` in the guest leases an IPv6 address. Nothing is downloaded.
The agent lets a test run a shell command in the guest and read its output.
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import shutil
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from vnet.errors import VnetError
from vnet.names import sha256

MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
           "failover", "net_failover", "virtio_net", "evdev", "button")

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /etc /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s /bin
for m in {modules}; do insmod /lib/modules/$m.ko 2>/dev/null; done
ip link set lo up
acpid -c /etc/acpi -l /tmp/acpid.log  # ACPI power button (QMP system_powerdown): power off
echo "VNET-BOOTED $(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
for dev in $(ls /sys/class/net); do
  [ "$dev" = lo ] && continue
  ip link set "$dev" up
  udhcpc -i "$dev" -s /udhcpc.sh -t 30 -T 1 -A 2 -b >/dev/ttyS0 2>&1
done
echo "VNET-NET-UP $(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
stty -F /dev/ttyS1 raw -echo
# The agent is not PID 1. Every orphan (a command's background job, udhcpc, acpid) becomes a child
# of PID 1, and its exit is a SIGCHLD there; a signal stops busybox's `read` and drops the part of
# the line it had read, so an agent as PID 1 lost requests (or took the rest of one as a request).
# PID 1 reaps orphans while it waits for the agent, and starts it again should it end.
while :; do
  /agent.sh & agent=$!
  while kill -0 $agent 2>/dev/null; do wait $agent; done
  sleep 1
done
"""

UDHCPC = """#!/bin/sh
# IPv4 only: a flush of every family would take the link's IPv6 link-local address with it
case "$1" in
  deconfig) ip -f inet addr flush dev "$interface" ;;
  bound|renew)
    ip -f inet addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    : > /etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    echo "VNET-LEASE $interface $ip/$mask $(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0 ;;
esac
"""

# One request per line: "<id> <base64 script>", <id> 8 hex digits. The agent answers
# "VNET-ACK <id>" when it takes a request, before running it, then the output between
# "VNET-BEGIN <id>" and "VNET-END <id> <rc>". A line that is not a whole request is refused
# ("VNET-BAD", and kept in the guest's /tmp/refused) and not run: a cut line must not run the tail
# of a script. The host sends a request again until it is acknowledged; a request already taken is
# answered again from the cache, never run a second time.
AGENT = """#!/bin/sh
exec 3<>/dev/ttyS1
last=$(cat /tmp/last-id 2>/dev/null)  # kept across a restart: a request sent again is not run again
refuse() { printf 'VNET-BAD %s\\n' "$1" >&3; echo "$2" >> /tmp/refused; }
while read -r id b64 <&3; do
  case "$id" in
    [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]) ;;
    *) refuse "" "$id $b64"; continue ;;
  esac
  if [ "$id" = "$last" ]; then
    { printf 'VNET-ACK %s\\n' "$id"; cat /tmp/reply; } >&3
    continue
  fi
  if [ -z "$b64" ] || ! echo "$b64" | base64 -d > /tmp/cmd 2>/dev/null; then
    refuse "$id" "$id $b64"; continue
  fi
  last=$id; echo "$id" > /tmp/last-id
  printf 'VNET-ACK %s\\n' "$id" >&3
  out=$(sh /tmp/cmd 2>&1); rc=$?
  printf 'VNET-BEGIN %s\\n%s\\nVNET-END %s %s\\n' "$id" "$out" "$id" "$rc" > /tmp/reply
  cat /tmp/reply >&3
done
"""


# run by busybox acpid on the ACPI power button event (what QEMU's system_powerdown presses)
POWEROFF = """#!/bin/sh
echo "VNET-POWERDOWN $(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
sync
poweroff -f
"""


def kernel_path() -> Path:
    found = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64")) or sorted(Path("/boot").glob("vmlinuz-*"))
    if not found:
        raise VnetError("no guest kernel in /boot: apt-get install linux-image-cloud-amd64")
    return found[-1]


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data); symlinks carry their target as data."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        encoded = name.encode() + b"\0"
        header = "070701" + "".join(
            f"{v:08x}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        )
        out.write(header.encode() + encoded)
        out.write(b"\0" * (-(110 + len(encoded)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


# a DHCPv6 lease in the guest: `dhclient6 eth0` (ISC dhclient, with this script, not its own, which
# expects a full distribution)
DHCLIENT6 = """#!/bin/sh
mkdir -p /var/lib/dhcp
exec dhclient -6 -1 -cf /etc/dhclient.conf -sf /dhclient6-script.sh -lf /var/lib/dhcp/leases6 -pf /run/dhclient6.pid "$@"
"""
DHCLIENT6_SCRIPT = """#!/bin/sh
case "$reason" in
  BOUND6|RENEW6|REBIND6)
    ip -6 addr add "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" 2>/dev/null
    echo "VNET-LEASE6 $interface $new_ip6_address $(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0 ;;
esac
"""
DHCLIENT_CONF = "# vnet's dnsmasq names a DHCPv6 client by the MAC in its DUID (dhcp-host=MAC,name)\n"


def _dhclient() -> list[tuple[str, bytes]]:
    """ISC dhclient and the shared objects it needs, at the paths it looks for them (none without it)."""
    binary = shutil.which("dhclient") or ("/usr/sbin/dhclient" if os.path.exists("/usr/sbin/dhclient") else None)
    if binary is None:
        return []
    import subprocess

    out = [("bin/dhclient", Path(binary).read_bytes())]
    listing = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=10).stdout
    for line in listing.splitlines():
        words = line.split()
        path = words[2] if len(words) > 2 and words[1] == "=>" else (words[0] if words and words[0].startswith("/") else None)
        if path and path.startswith("/"):
            out.append((path.lstrip("/"), Path(path).read_bytes()))
    return out


def build_initrd(dest_dir: Path) -> Path:
    """Build (or reuse) the initramfs; its name carries a hash of its inputs."""
    kernel = kernel_path()
    version = kernel.name.removeprefix("vmlinuz-")
    moddir = Path("/lib/modules") / version / "kernel"
    busybox = shutil.which("busybox")
    if busybox is None:
        raise VnetError("busybox is missing: apt-get install busybox-static")
    modules = []
    for m in MODULES:
        found = list(moddir.rglob(f"{m}.ko"))
        if not found:
            raise VnetError(f"module {m}.ko not found under {moddir}")
        modules.append((m, found[0].read_bytes()))
    files = {
        "init": INIT.format(modules=" ".join(MODULES)).encode(),
        "udhcpc.sh": UDHCPC.encode(),
        "agent.sh": AGENT.encode(),
        "etc/acpi/PWRF/00000080": POWEROFF.encode(),
    }
    dhclient = _dhclient()
    if dhclient:
        files.update({"bin/dhclient6": DHCLIENT6.encode(), "dhclient6-script.sh": DHCLIENT6_SCRIPT.encode(),
                      "etc/dhclient.conf": DHCLIENT_CONF.encode()})
    bb = Path(busybox).read_bytes()
    key = sha256(b"".join([bb, *files.values(), *(d for _, d in modules), *(d for _, d in dhclient)])).hexdigest()[:12]
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / f"initrd-{key}.gz"
    if target.exists():
        return target
    d, f, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    entries = [("bin", d, b""), ("lib", d, b""), ("lib/modules", d, b""), ("etc", d, b""), ("etc/acpi", d, b""), ("etc/acpi/PWRF", d, b""),
               ("bin/busybox", x, bb), ("bin/sh", stat.S_IFLNK | 0o777, b"busybox")]
    dirs = sorted({str(Path(p).parents[i]) for p, _ in dhclient for i in range(len(Path(p).parents) - 1)} - {"bin", "lib"})
    entries += [(name, d, b"") for name in dirs]
    entries += [(name, x, data) for name, data in files.items()]
    entries += [(name, x, data) for name, data in dhclient]
    entries += [(f"lib/modules/{m}.ko", f, data) for m, data in modules]
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(_cpio(entries), compresslevel=1))
    tmp.replace(target)
    return target


def reply_of(data: bytes, ident: str) -> tuple[int, str] | None:
    """(rc, output) of request `ident` once its reply is whole in `data`, else None. What comes
    before it (another request's reply, an acknowledgement, a reply sent again) is not read."""
    head, found, tail = data.partition(f"VNET-END {ident} ".encode())
    if not found or b"\n" not in tail:
        return None
    out = head.rpartition(f"VNET-BEGIN {ident}\n".encode())[2]
    return int(tail.split()[0]), out.decode(errors="replace").replace("\r", "").rstrip("\n")


def taken(data: bytes, ident: str) -> bool:
    """Whether the agent acknowledged request `ident` (it runs it, once)."""
    return f"VNET-ACK {ident}\n".encode() in data or f"VNET-BEGIN {ident}\n".encode() in data


RESEND_AFTER = 1.0  # an unacknowledged request is sent again after this, then after twice as long, ...


@dataclass
class Agent:
    """Runs shell commands in a guest through its second serial port (a QEMU unix socket)."""

    socket_path: Path
    resent: int = field(default=0, compare=False)  # requests sent again, unacknowledged: lines the guest lost

    def run(self, script: str, timeout: float = 30.0) -> tuple[int, str]:
        ident = os.urandom(4).hex()
        request = f"{ident} {base64.b64encode(script.encode()).decode()}\n".encode()
        deadline = time.monotonic() + timeout
        resend_at, wait = time.monotonic() + RESEND_AFTER, RESEND_AFTER
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(self.socket_path))
            s.sendall(request)
            data = b""
            while (reply := reply_of(data, ident)) is None:
                now = time.monotonic()
                if now >= deadline:
                    raise TimeoutError(f"guest agent did not answer within {timeout}s")
                acked = taken(data, ident)
                if not acked and now >= resend_at:
                    # The line may not have arrived whole (the agent refuses a cut one): the same
                    # id again is safe, the agent runs an id once and repeats its reply.
                    s.sendall(request)
                    self.resent += 1
                    wait *= 2
                    resend_at = now + wait
                s.settimeout(max(0.001, (deadline if acked else min(deadline, resend_at)) - now))
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    raise ConnectionError("guest agent closed the connection")
                data += chunk
        return reply

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait until the guest's agent answers; returns seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                rc, out = self.run("echo ready", timeout=3)
                if rc == 0 and out.endswith("ready"):
                    return time.monotonic() - t0
            except (OSError, TimeoutError, ConnectionError, ValueError):
                time.sleep(0.3)
        raise TimeoutError(f"guest agent at {self.socket_path} not ready after {timeout}s")
