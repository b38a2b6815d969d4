"""DHCP snooping: a port that takes its address from vnet's dnsmasq may send only from the address
it leased, learned as the lease happens.

dnsmasq runs its `dhcp-script` (as root, in the namespace dnsmasq runs in) on every lease event
with `add|old|del MAC ADDRESS [NAME]`; vnet points it at a two-line script it writes itself under
the topology's state directory (0700, root's), which runs this module by the absolute path of
vnet's own interpreter, isolated from the environment (`-I`), with fixed arguments: the target
namespace and the nftables table. Everything dnsmasq passes is validated; anything else is
ignored. The (MAC, address) pair goes into the bridge table's `leased` set with the lease's own
time as its timeout, so an expired lease lets nothing more through even if no event comes.

    python -I -m vnet.snoop NETNS TABLE ACTION MAC ADDRESS [NAME]

NETNS is a name under /run/netns, or `-` for the init namespace (vnet run without --netns).
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import time
from pathlib import Path

SET = "leased"
NETNS_DIR = Path("/run/netns")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_TABLE_RE = re.compile(r"vnet-[a-z][a-z0-9_-]{0,31}")
_NETNS_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
MARK = "# vnet dhcp-script"
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Invalid(ValueError):
    pass


def script_path(state: Path, network: str) -> Path:
    return state / f"dhcp-event-{network}"


def interpreter() -> str:
    """The Python that runs vnet, named the same however vnet was started (`vnet`, `python -m`,
    `python3`): the environment's own bin/python3 where there is one (a venv's site-packages
    come with it), so the script vnet derives does not change with the way it was called."""
    candidate = os.path.join(sys.prefix, "bin", "python3")
    return candidate if os.path.exists(candidate) else sys.executable


def script_text(netns: str | None, table: str, python: str | None = None) -> str:
    """The script dnsmasq runs: vnet's interpreter, this module, fixed arguments, then dnsmasq's."""
    import shlex  # here: every command imports this module, few write the script

    python = python or interpreter()
    ns = netns or "-"
    check_netns(ns, must_exist=False)
    check_table(table)
    return (
        f"#!/bin/sh\n{MARK}: written by vnet, run by dnsmasq (as root) on each DHCP lease event\n"
        f"exec {shlex.quote(python)} -I -m vnet.snoop {shlex.quote(ns)} {table} \"$@\"\n"
    )


def check_netns(ns: str, must_exist: bool = True) -> str:
    if ns == "-":
        return "/proc/1/ns/net"
    if not _NETNS_RE.fullmatch(ns) or ns in (".", ".."):
        raise Invalid(f"bad namespace name {ns!r}")
    path = NETNS_DIR / ns
    if must_exist and not path.exists():
        raise Invalid(f"no namespace {ns!r}")
    return str(path)


def check_table(table: str) -> str:
    if not _TABLE_RE.fullmatch(table):
        raise Invalid(f"bad table name {table!r}")
    return table


def check_mac(mac: str) -> str:
    mac = mac.lower()
    if not _MAC_RE.fullmatch(mac):
        raise Invalid(f"bad MAC {mac!r}")
    return mac


def check_ipv4(address: str) -> str:
    try:
        return str(ipaddress.IPv4Address(address))
    except ValueError:
        raise Invalid(f"not an IPv4 address: {address!r}") from None


def element(mac: str, address: str, timeout: int | None = None) -> str:
    """A `leased` element: its key is two raw payloads (MAC, address), written as integers."""
    key = f"0x{check_mac(mac).replace(':', '')} . 0x{int(ipaddress.IPv4Address(check_ipv4(address))):08x}"
    return key + (f" timeout {timeout}s" if timeout else "")


def commands(table: str, action: str, mac: str, address: str, expires: int, now: float) -> str:
    """The nft script for one lease event: (re)add the pair with the time the lease has left, or
    remove it. Adding then deleting first makes both valid whether or not the pair is there, and
    refreshes the timeout of a renewed lease."""
    check_table(table)
    pair = element(mac, address)
    reset = f"add element bridge {table} {SET} {{ {pair} }}\ndelete element bridge {table} {SET} {{ {pair} }}\n"
    if action == "del":
        return reset
    if expires == 0:  # an infinite lease
        return reset + f"add element bridge {table} {SET} {{ {pair} }}\n"
    left = int(expires - now)
    if left <= 0:
        return reset
    return reset + f"add element bridge {table} {SET} {{ {element(mac, address, left)} }}\n"


def reseed(table: str, state: Path, now: float | None = None) -> str:
    """`add element` lines for every running IPv4 lease in the topology's lease files: what a
    freshly made `leased` set must hold (the tables were replaced whole). Lines that do not parse
    are skipped."""
    from vnet.drivers import dnsmasq

    now = time.time() if now is None else now
    lines = []
    for lease in dnsmasq.leases(state):  # the lease files, wherever they live (vnet.libdir)
        expires = lease.expires
        if expires and expires <= now:
            continue
        try:
            pair = element(lease.mac, lease.address, int(expires - now) if expires else None)
        except Invalid:
            continue
        lines.append(f"add element bridge {check_table(table)} {SET} {{ {pair} }}\n")
    return "".join(lines)


def _expires(env: dict[str, str], now: float) -> int:
    value = env.get("DNSMASQ_LEASE_EXPIRES")
    if value is None and env.get("DNSMASQ_LEASE_LENGTH") is not None:
        length = env["DNSMASQ_LEASE_LENGTH"]
        if not length.isdigit():
            raise Invalid("bad DNSMASQ_LEASE_LENGTH")
        return int(now) + int(length) if int(length) else 0
    if value is None or not value.isdigit():
        raise Invalid("bad or missing DNSMASQ_LEASE_EXPIRES")
    return int(value)


def main(argv: list[str], env: dict[str, str] | None = None) -> int:
    env = dict(os.environ) if env is None else env
    if len(argv) < 3:
        print("usage: python -I -m vnet.snoop NETNS TABLE ACTION [MAC ADDRESS [NAME]]", file=sys.stderr)
        return 2
    netns, table, action, *rest = argv
    try:
        path = check_netns(netns)
        check_table(table)
        if action not in ("add", "old", "del"):
            return 0  # init, tftp, arp-add, arp-del, relay-snoop: nothing to learn
        if len(rest) < 2:
            raise Invalid("missing MAC or address")
        mac, address = rest[0], rest[1]
        try:
            ipaddress.IPv6Address(address)
            return 0  # a DHCPv6 lease (its second argument is a DUID): not snooped
        except ValueError:
            check_ipv4(address)
        now = time.time()
        script = commands(table, action, mac, address, 0 if action == "del" else _expires(env, now), now)
    except Invalid as exc:
        print(f"vnet.snoop: ignored: {exc}", file=sys.stderr)
        return 1
    import subprocess  # here: the ruleset kind imports this module, and `vnet status` runs no command

    proc = subprocess.run(["nsenter", f"--net={path}", "--", "nft", "-f", "-"], input=script, capture_output=True, text=True,
                          env={"PATH": SAFE_PATH})
    if proc.returncode != 0:
        print(f"vnet.snoop: nft: {proc.stderr.strip()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
