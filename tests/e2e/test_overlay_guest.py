"""A real QEMU guest on h2 of a three-host overlay: it leases from the dnsmasq on h1 over VXLAN,
resolves and reaches an endpoint on h1, and renews its lease by unicast to the DHCP server; with
`control: static` (head-end replication, FDB from the topology) and with `control: evpn` (vnet's
FRR on each host, the flood lists and remote MACs from BGP EVPN routes)."""

from __future__ import annotations

import pytest

import ipaddress
import os
import re
import time

from vnet import guest, qemuargs
from vnet.drivers import dnsmasq
from vnet.statedir import target_root as state_root
from vnet.kinds import frr as frrkind

from tests.integration.test_evpn import bgp_peers
from tests.integration.test_overlay import hosts, wait_for  # noqa: F401 — hosts: the three-host sandbox fixture

TEXT = """name: {name}
hosts: {{h1: 198.18.1.2, h2: 198.18.2.2, h3: 198.18.3.2}}
networks:
  lan:
    mode: nat
    subnet: 10.90.0.0/24
    dhcp: {{lease: 2m}}
    dns: {{domain: lab.test}}
    overlay: {{vni: 4242, control: {control}}}
endpoints:
  a: {{kind: netns, network: lan, address: 10.90.0.10/24, host: h1}}
vms:
  web: {{image: tiny, host: h2, nics: [{{network: lan}}]}}
"""
EVPN = "evpn: {asn: 65030}\n"


def _evpn_up(hosts, host: str, peer: str, timeout: float = 90.0) -> None:
    """Wait (bounded) until `host`'s FRR has an Established EVPN session to `peer`."""
    assert wait_for(lambda: bgp_peers(hosts, host).get(peer) == "Established", timeout), \
        f"no Established BGP session {host} → {peer} after {timeout}s: {bgp_peers(hosts, host)}"


def _lease(agent: guest.Agent, timeout: float = 60.0) -> ipaddress.IPv4Interface:
    deadline = time.monotonic() + timeout
    while True:
        rc, out = agent.run("ip -4 -o addr show dev eth0")
        found = re.search(r"inet (\S+)", out)
        if rc == 0 and found:
            return ipaddress.IPv4Interface(found.group(1))
        assert time.monotonic() < deadline, f"no lease on eth0 after {timeout}s: {out!r}"
        time.sleep(0.3)


@pytest.mark.parametrize("control", ["static", "evpn"])
def test_a_guest_on_h2_leases_from_h1_and_renews(hosts, control):
    if control == "evpn" and frrkind.installed():
        if os.environ.get("CI"):
            raise RuntimeError(f"FRR is missing in CI ({frrkind.installed()}): scripts/setup.sh installs the frr package")
        pytest.skip(f"FRR is not installed ({frrkind.installed()} missing): apt-get install frr")
    text = TEXT.format(name=hosts.name, control=control) + (EVPN if control == "evpn" else "")
    for h in hosts.sb.host_names:
        hosts.apply(h, text)
    if control == "evpn":
        # the guest's DISCOVER reaches h1 by h2's flood list, which a type-3 route from h1 makes
        _evpn_up(hosts, hosts.h2, "198.18.1.2")
        _evpn_up(hosts, hosts.h1, "198.18.2.2")
    agent = guest.Agent(qemuargs.files(state_root(hosts.state, hosts.h2) / hosts.name, "web")["agent"])
    agent.wait_ready(timeout=180)
    ip = _lease(agent)
    assert ip.network == ipaddress.IPv4Network("10.90.0.0/24") and str(ip.ip) not in ("10.90.0.1", "10.90.0.2")
    rc, out = agent.run("cat /etc/resolv.conf; ping -c1 -W3 a.lab.test")
    assert rc == 0 and "nameserver 10.90.0.2" in out and "10.90.0.10" in out, out

    h1_state = state_root(hosts.state, hosts.h1) / hosts.name
    leases = {l.name: l for l in dnsmasq.leases(h1_state)}
    assert leases["web"].address == str(ip.ip)
    first = leases["web"].expires
    # the lease file keeps whole seconds: a renewal within the second the lease was granted in
    # would not move its expiry, so the renewal waits (bounded) until the clock has left it
    granted = first - 120  # dhcp: {lease: 2m}
    deadline = time.monotonic() + 5
    while time.time() < granted + 1:
        assert time.monotonic() < deadline, (first, time.time())
        time.sleep(0.05)
    # a renewal goes by unicast to the server identifier (10.90.0.2, not the anycast gateway)
    rc, out = agent.run("kill -USR1 $(pidof udhcpc)")
    assert rc == 0, out
    deadline = time.monotonic() + 20
    while True:
        renewed = {l.name: l for l in dnsmasq.leases(h1_state)}["web"]
        if renewed.expires > first:
            break
        assert time.monotonic() < deadline, "the lease was not renewed at h1's dnsmasq"
        time.sleep(0.5)
