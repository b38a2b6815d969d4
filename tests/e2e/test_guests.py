"""Two real guests per network: DHCP leases from vnet's dnsmasq, DNS by name, NAT to the internet."""

from __future__ import annotations

import ipaddress
import re
import time

from vnet import api, guest, qemuargs, sandbox
from vnet.drivers import process

from tests.integration import snapshot


def _agents(world, topo):
    state = world.topo_state(topo.name)
    return {vm: guest.Agent(qemuargs.files(state, vm)["agent"]) for vm in topo.vms}


def _lease_of(agent: guest.Agent) -> ipaddress.IPv4Interface:
    rc, out = agent.run("ip -4 -o addr show dev eth0")
    assert rc == 0, out
    return ipaddress.IPv4Interface(re.search(r"inet (\S+)", out).group(1))


def test_guests_lease_resolve_each_other_and_reach_the_internet(world):
    topo = world.load("guests.yaml")
    before = snapshot.take(world.host)
    t0 = time.monotonic()
    world.apply(topo)
    agents = _agents(world, topo)
    for a in agents.values():
        a.wait_ready(timeout=180)
    booted = time.monotonic() - t0

    web, db = _lease_of(agents["web"]), _lease_of(agents["db"])
    assert ipaddress.IPv4Address("192.168.223.100") <= web.ip <= ipaddress.IPv4Address("192.168.223.199")
    assert db.ip == ipaddress.IPv4Address("192.168.223.20")  # the reservation
    leases = {lease.name: lease.address for lease in api.leases(topo.name, state_dir=world.state, netns=world.host)}
    assert leases == {"web": str(web.ip), "db": "192.168.223.20"}

    # by DNS name through vnet's dnsmasq, both ways, and to a declared endpoint
    rc, out = agents["web"].run("ping -c1 -W3 db.lab.test")
    assert rc == 0 and "192.168.223.20" in out, out
    rc, out = agents["db"].run("ping -c1 -W3 web")  # the search domain comes with the lease
    assert rc == 0 and str(web.ip) in out, out
    rc, out = agents["db"].run("ping -c1 -W3 c1.lab.test")
    assert rc == 0, out
    # a name only the upstream (the sandbox LAN's resolver) knows
    for a in agents.values():
        rc, out = a.run(f"nslookup -type=a {sandbox.DNS_NAME}")
        assert rc == 0 and sandbox.WAN_ADDR in out, out
        # the internet, masqueraded to the host's uplink address
        rc, out = a.run(f"ping -c1 -W3 {sandbox.WAN_ADDR} && echo | nc -w 3 {sandbox.WAN_ADDR} {sandbox.WAN_PORT}")
        assert rc == 0 and out.splitlines()[-1] == sandbox.HOST_ADDR, out

    print(f"\nboot to lease and agent ready, two guests in parallel: {booted:.1f}s")
    pids = [process.running(qemuargs.files(world.topo_state(topo.name), vm)["pid"]) for vm in topo.vms]
    assert all(pids)
    world.destroy(topo.name)
    assert not any(process.running(qemuargs.files(world.topo_state(topo.name), vm)["pid"]) for vm in topo.vms)
    assert snapshot.take(world.host) == before


def test_isolated_guests_lease_and_reach_each_other_only(world):
    topo = world.load("isolated-guests.yaml")
    before = snapshot.take(world.host)
    world.apply(topo)
    agents = _agents(world, topo)
    for a in agents.values():
        a.wait_ready(timeout=180)
    a, b = _lease_of(agents["a"]), _lease_of(agents["b"])
    subnet = ipaddress.IPv4Network("10.77.0.0/24")
    assert a.ip in subnet and b.ip in subnet and a.ip != b.ip
    rc, out = agents["a"].run("ping -c1 -W3 b.iso.test")
    assert rc == 0 and str(b.ip) in out, out
    rc, out = agents["b"].run(f"ping -c1 -W2 {sandbox.HOST_ADDR}")
    assert rc != 0, out
    # the host has no address on this bridge
    state = snapshot.take(world.host)
    assert not [x for x in state["addresses"] if x[0] == "vb-iso-lab" and ":" not in x[1]]
    world.destroy(topo.name)
    assert snapshot.take(world.host) == before
