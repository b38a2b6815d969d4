"""A real QEMU guest (vnet's tiny guest) on a dual-stack network: an IPv6 address by SLAAC from
vnet's router advertisements, AAAA names from vnet's DNS, and NAT66 to the sandbox's internet.

The tiny guest's busybox has no DHCPv6 client (no udhcpc6): the guest carries ISC dhclient where
the machine has it (`make test` installs isc-dhcp-client), for the DHCPv6 case."""

from __future__ import annotations

import ipaddress
import re
import shutil

import pytest

from vnet import dnsconf, qemuargs, sandbox, spec
from vnet.spec.validate import dhcp6_range
from vnet import guest as guestmod

from tests.integration import snapshot

TOPO = """
name: six
networks:
  lan0:
    mode: nat
    subnet: 192.168.226.0/24
    subnet6: 2001:db8:78::/64
    uplink: eth0
    dhcp: true
    dns: {domain: six.test}
vms:
  web: {image: tiny, memory: 256M, nics: [{network: lan0}]}
  db: {image: tiny, memory: 256M, nics: [{network: lan0}]}
"""
PREFIX = ipaddress.IPv6Network("2001:db8:78::/64")


def _global6(agent: guestmod.Agent) -> str | None:
    rc, out = agent.run("ip -6 -o addr show dev eth0 scope global")
    found = re.search(r"inet6 (\S+)/64", out) if rc == 0 else None
    return found.group(1) if found else None


def test_guest_takes_slaac_address_and_resolves_aaaa(world):
    topo = spec.load_text(TOPO)
    before = snapshot.take(world.host)
    host6 = sandbox.host_ipv6(world.host)
    world.apply(topo)
    state = world.state_of(topo.name)
    agents = {vm: guestmod.Agent(qemuargs.files(state, vm)["agent"]) for vm in topo.vms}
    for a in agents.values():
        a.wait_ready(timeout=180)
    expected = {vm: str(dnsconf.eui64(PREFIX, qemuargs.nic_mac(topo, vm, 0))) for vm in topo.vms}
    for vm, a in agents.items():
        # SLAAC from vnet's advertisements: bounded wait (the guest solicits when its link comes up)
        rc, out = a.run("for i in $(seq 50); do ip -6 -o addr show dev eth0 scope global | grep -v tentative | grep -q inet6 && break; sleep 0.2; done; ip -6 -o addr show dev eth0")
        assert _global6(a) == expected[vm], out
        rc, out = a.run("for i in $(seq 50); do ip -6 route show default | grep -q via && break; sleep 0.2; done; ip -6 route show default")
        assert rc == 0 and "via fe80:" in out, out  # the gateway advertises itself as the default router
    # AAAA for every name, through vnet's DNS
    # (bounded retries: a guest's first query can meet its resolver before the lease's DNS is up)
    ask = "for i in $(seq 10); do nslookup -type=aaaa {} && exit 0; sleep 0.5; done; cat /etc/resolv.conf; exit 1"
    rc, out = agents["web"].run(ask.format("db.six.test"))
    assert rc == 0 and expected["db"] in out, out
    rc, out = agents["db"].run(ask.format("gateway.six.test"))
    assert rc == 0 and "2001:db8:78::1" in out, out
    rc, out = agents["web"].run("ping -6 -c1 -W3 db.six.test")
    assert rc == 0, out
    # NAT66 to the sandbox's internet: the responder sees the host's address
    rc, out = agents["db"].run(f"ping -6 -c1 -W3 {sandbox.WAN_ADDR6} && echo | nc -w 3 {sandbox.WAN_ADDR6} {sandbox.WAN_PORT}")
    assert rc == 0 and out.splitlines()[-1] == host6, out
    world.destroy(topo.name)
    assert snapshot.take(world.host) == before


DHCP6 = """
name: sixd
networks:
  lan0:
    mode: host
    subnet: 192.168.227.0/24
    subnet6: 2001:db8:79::/64
    dhcp: true
    dhcp6: true
    dns: {domain: sixd.test}
vms:
  web: {image: tiny, memory: 256M, nics: [{network: lan0}]}
"""


@pytest.mark.skipif(shutil.which("dhclient") is None, reason="the tiny guest carries ISC dhclient only where the machine has it (make test installs isc-dhcp-client)")
def test_guest_leases_by_dhcpv6_and_is_named_in_aaaa(world):
    topo = spec.load_text(DHCP6)
    before = snapshot.take(world.host)
    world.apply(topo)
    agent = guestmod.Agent(qemuargs.files(world.state_of(topo.name), "web")["agent"])
    agent.wait_ready(timeout=180)
    rc, out = agent.run("for i in $(seq 50); do ip -6 -o addr show dev eth0 scope link | grep -v tentative | grep -q inet6 && break; sleep 0.2; done; "
                        "dhclient6 eth0; ip -6 -o addr show dev eth0 scope global")
    found = re.search(r"inet6 (\S+)/128", out)
    assert rc == 0 and found, out
    leased = ipaddress.IPv6Address(found.group(1))
    first, last = dhcp6_range(topo, "lan0")
    assert first <= leased <= last, out
    # vnet's DNS names the guest by that lease, and the lease carries traffic to the gateway
    rc, out = agent.run("nslookup -type=aaaa web.sixd.test")
    assert rc == 0 and str(leased) in out, out
    rc, out = agent.run("for i in $(seq 50); do ip -6 -o addr show dev eth0 scope global | grep -q tentative || break; sleep 0.2; done; "
                        "ping -6 -c1 -W3 2001:db8:79::1")
    assert rc == 0, out
    world.destroy(topo.name)
    assert snapshot.take(world.host) == before
