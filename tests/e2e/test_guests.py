"""Two real guests per network: DHCP leases from vnet's dnsmasq, DNS by name, NAT to the internet."""

from __future__ import annotations

import ipaddress
import pwd
import re
import time
from pathlib import Path

from vnet import api, check, guest, qemuargs, sandbox
from vnet.drivers import process

from tests.integration import probe, snapshot


def _agents(world, topo):
    state = world.state_of(topo.name)
    return {vm: guest.Agent(qemuargs.files(state, vm)["agent"]) for vm in topo.vms}


LEASE_TIMEOUT = 60  # udhcpc goes to the background when the first tries fail: the agent may answer first


def _lease_of(agent: guest.Agent, vm: str) -> ipaddress.IPv4Interface:
    """The guest's leased address on eth0, waited for: the agent answering does not mean udhcpc is done."""
    seen = []

    def leased() -> re.Match | None:
        rc, out = agent.run("ip -4 -o addr show dev eth0")
        assert rc == 0, out
        seen[:] = [out]
        return re.search(r"inet (\S+)", out)

    found = probe.wait_for(leased, LEASE_TIMEOUT, f"guest {vm}: no DHCP lease on eth0 after its agent answered (last: {seen!r})", every=0.5)
    return ipaddress.IPv4Interface(found.group(1))


def _status(pid: int) -> dict[str, str]:
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)


def _assert_confined(world, topo) -> None:
    """Each guest's QEMU runs as the unprivileged user, in seccomp's filter mode, with no
    capabilities and no way to gain any."""
    qemu_uid = pwd.getpwnam(qemuargs.DEFAULT_USER).pw_uid
    for vm in topo.vms:
        pid = process.running(qemuargs.files(world.state_of(topo.name), vm)["pid"])
        assert pid, f"no QEMU running for {vm}"
        st = _status(pid)
        uids = [int(x) for x in st["Uid"].split()]
        gids = [int(x) for x in st["Gid"].split()]
        assert uids == [qemu_uid] * 4 and 0 not in uids, f"QEMU of {vm} runs with uids {uids}"
        assert 0 not in gids, f"QEMU of {vm} runs with gids {gids}"
        assert st["Seccomp"].strip() == "2", f"QEMU of {vm} is not sandboxed: Seccomp {st['Seccomp']}"
        assert st["NoNewPrivs"].strip() == "1"
        assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == int(st["CapBnd"], 16) == 0, st
        assert Path(f"/proc/{pid}/exe").resolve().name == "qemu-system-x86_64"


def test_guests_lease_resolve_each_other_and_reach_the_internet(world):
    topo = world.load("guests.yaml")
    before = snapshot.take(world.host)
    t0 = time.monotonic()
    world.apply(topo)
    agents = _agents(world, topo)
    for a in agents.values():
        a.wait_ready(timeout=180)
    booted = time.monotonic() - t0

    web, db = _lease_of(agents["web"], "web"), _lease_of(agents["db"], "db")
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
    _assert_confined(world, topo)
    pids = [process.running(qemuargs.files(world.state_of(topo.name), vm)["pid"]) for vm in topo.vms]
    assert all(pids)
    world.destroy(topo.name)
    assert not any(process.running(qemuargs.files(world.state_of(topo.name), vm)["pid"]) for vm in topo.vms)
    assert snapshot.take(world.host) == before


def test_isolated_guests_lease_and_reach_each_other_only(world):
    topo = world.load("isolated-guests.yaml")
    before = snapshot.take(world.host)
    world.apply(topo)
    agents = _agents(world, topo)
    for a in agents.values():
        a.wait_ready(timeout=180)
    a, b = _lease_of(agents["a"], "a"), _lease_of(agents["b"], "b")
    subnet = ipaddress.IPv4Network("10.77.0.0/24")
    assert a.ip in subnet and b.ip in subnet and a.ip != b.ip
    _assert_confined(world, topo)
    rc, out = agents["a"].run("ping -c1 -W3 b.iso.test")
    assert rc == 0 and str(b.ip) in out, out
    # the host has no address on this bridge
    state = snapshot.take(world.host)
    assert not [x for x in state["addresses"] if x[0] == "vb-iso-lab" and ":" not in x[1]]

    def reached() -> dict[str, bool]:
        return {
            "b -> host": agents["b"].run(f"ping -c1 -W1 {sandbox.HOST_ADDR}")[0] == 0,
            "b -> LAN router": agents["b"].run(f"ping -c1 -W1 {sandbox.LAN_ROUTER}")[0] == 0,
            "host -> b": check.ping(world.host, str(b.ip)),
        }

    # routes both ways and a host that forwards: only vnet's firewall keeps the guests in
    with probe.routed(world.host, "vb-iso-lab", str(subnet)):
        rc, out = agents["b"].run(f"ip route replace default via {sandbox.HOST_ADDR} dev eth0 onlink")
        assert rc == 0, out
        assert not any((got := reached()).values()), got
        with probe.firewall_removed(world, topo):  # the control: without vnet's rules it all gets through
            assert all((got := reached()).values()), got
        assert not any((got := reached()).values()), got
        rc, out = agents["a"].run(f"ping -c1 -W3 {b.ip}")
        assert rc == 0, out
    world.destroy(topo.name)
    assert snapshot.take(world.host) == before
