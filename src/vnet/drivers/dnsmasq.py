"""dnsmasq as a supervised daemon: config, pid file, lease file and log under the state directory."""

from __future__ import annotations

import ipaddress
import os
import re
import time
from pathlib import Path

from vnet import dnsconf, libdir
from vnet.drivers import process
from vnet.drivers.ns import Namespaces
from vnet.values import Frozen, _set
from vnet.names import sha256
from vnet.resources import Resource, make


def digest(config: str) -> str:
    return sha256(config.encode()).hexdigest()[:16]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def create(nss: Namespaces, state: Path, r: Resource) -> None:
    create_many(nss, state, [r])


def create_many(nss: Namespaces, state: Path, rs: list[Resource]) -> None:
    """One dnsmasq per resource, started together (see process.start_many)."""
    daemons = []
    for r in rs:
        f = dnsconf.files(state, r.get("network"))
        _write(f["conf"], r.get("config"))
        libdir.ensure(state)
        for path in (f["leases"], f["log"]):
            path.touch()
            os.chown(path, 65534, 65534)  # dnsmasq drops to nobody; it must still write these
        daemons.append((nss.get(r.get("ns")), ["dnsmasq", f"--conf-file={f['conf']}"], f["pid"], f["conf"]))
    process.start_many(daemons)


def delete(nss: Namespaces, state: Path, r: Resource) -> None:
    f = dnsconf.files(state, r.get("network"))
    process.stop(f["pid"], marker=f["conf"])


def update(nss: Namespaces, state: Path, old: Resource, new: Resource) -> None:
    delete(nss, state, old)
    create(nss, state, new)


def observe(state: Path) -> list[Resource]:
    out = []
    for conf in sorted(libdir.named(state, "dnsmasq-", ".conf")):
        network = conf.name[len("dnsmasq-") : -len(".conf")]
        f = dnsconf.files(state, network)
        if process.running(f["pid"], marker=conf) is None:
            continue  # crashed or stopped: not there, so apply starts it again
        text = conf.read_text()
        ns = _ns_of(text)
        out.append(make("service", f"dnsmasq-{network}", {"config": text}, network=network, ns=ns, digest=digest(text)))
    return out


def _ns_of(config: str) -> str:
    for line in config.splitlines():
        if line.startswith("# netns="):
            return line.split("=", 1)[1]
    return ""


_LEASE = ("network", "mac", "address", "name", "expires")


class Lease(Frozen):
    """A DHCP lease, as a dnsmasq lease file holds it."""

    __slots__ = _LEASE
    network: str
    mac: str
    address: str
    name: str
    expires: int  # epoch seconds, 0 for infinite

    def __init__(self, network: str, mac: str, address: str, name: str, expires: int) -> None:
        _set(self, "network", network)
        _set(self, "mac", mac)
        _set(self, "address", address)
        _set(self, "name", name)
        _set(self, "expires", expires)

    def to_json(self) -> dict:
        return {**dict(zip(_LEASE, self._values())), "remaining": self.remaining}

    @property
    def remaining(self) -> str:
        if self.expires == 0:
            return "infinite"
        left = int(self.expires - time.time())
        return f"{left}s" if left >= 0 else "expired"


def leases(state: Path) -> list[Lease]:
    out = []
    for path in sorted({*libdir.named(state, "dnsmasq-", ".leases"), *libdir.named(libdir.lib_of(state), "dnsmasq-", ".leases")}):
        network = path.name[len("dnsmasq-") : -len(".leases")]
        try:
            text = path.read_bytes().decode(errors="replace")
        except OSError:
            continue  # removed while read (a destroy), or unreadable: no leases to show
        for line in text.splitlines():
            lease = parse_lease(network, line)
            if lease is not None:
                out.append(lease)
    return out


_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def parse_lease(network: str, line: str) -> Lease | None:
    """One line of a dnsmasq lease file (`expiry mac address name client-id`), or None for a line
    that is not an IPv4 lease (a DHCPv6 `duid` line, a line cut short, anything malformed)."""
    fields = line.split()
    if len(fields) < 4 or not fields[0].isdigit() or len(fields[0]) > 12:
        return None
    mac = fields[1].lower()
    if not _MAC_RE.fullmatch(mac):
        return None
    try:
        address = str(ipaddress.IPv4Address(fields[2]))
    except ValueError:
        return None
    name = "" if fields[3] == "*" else fields[3]
    if not name.isprintable():
        name = name.encode("unicode_escape").decode()
    return Lease(network, mac, address, name, int(fields[0]))
