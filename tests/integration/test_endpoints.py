"""Endpoint conveniences: a DHCP client vnet runs in the namespace (`address: dhcp`), and macvlan
endpoints on a host NIC — real leases, real traffic."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from vnet import check, dnsconf, names, sandbox, spec
from vnet.drivers import ns as nsmod
from vnet.drivers import process, udhcpc

NAT_DHCP = """
name: {name}
networks:
  lan0:
    mode: nat
    subnet: 10.77.0.0/24
    uplink: eth0
    dhcp: {{lease: 2m}}
    dns: {{domain: ep.test}}
endpoints:
  c1: {{kind: netns, network: lan0, address: dhcp}}
  c2: {{kind: netns, network: lan0, address: 10.77.0.20/24}}
"""


def wait_for(what: str, cond, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout}s: {what}")


def _addrs(ns: str, ifname: str = "eth0") -> list[str]:
    """IPv4 addresses with prefix on the interface."""
    out = check.run_in(ns, ["ip", "-4", "-o", "addr", "show", "dev", ifname]).stdout.split()
    return [out[i + 1] for i, w in enumerate(out) if w == "inet"]


def _addr(ns: str, ifname: str = "eth0") -> str | None:
    got = _addrs(ns, ifname)
    return got[0] if got else None


def _default_via(ns: str) -> str | None:
    out = check.run_in(ns, ["ip", "-4", "route", "show", "default"]).stdout.split()
    return out[out.index("via") + 1] if "via" in out else None


def _client_pid(world, topo, ep: str) -> int | None:
    f = udhcpc.files(world.state_of(topo.name), ep)
    return process.running(f["pid"], marker=f["sh"])


def _dnsmasq_expiry(world, topo, ip: str) -> int | None:
    for line in dnsconf.files(world.state_of(topo.name), "lan0")["leases"].read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == ip:
            return int(fields[0])
    return None


def test_dhcp_endpoint_leases_renews_and_reaches_out(world):
    topo = spec.load_text(NAT_DHCP.format(name="epd"))
    world.apply(topo)
    ns = names.netns("epd", "c1")
    pid = _client_pid(world, topo, "c1")
    assert pid is not None and pid in nsmod.pids_in(ns)  # runs inside the endpoint's namespace
    leased = ipaddress.IPv4Interface(wait_for("a lease on c1", lambda: _addr(ns), 10))
    assert leased.network == ipaddress.IPv4Network("10.77.0.0/24") and leased.ip != ipaddress.IPv4Address("10.77.0.20")
    assert _default_via(ns) == "10.77.0.1"
    resolv = (udhcpc.ETC_NETNS / ns / "resolv.conf").read_text()
    assert "nameserver 10.77.0.1" in resolv and "search ep.test" in resolv
    assert check.ping(ns, "10.77.0.1")  # the gateway
    assert check.ping(ns, sandbox.WAN_ADDR)  # the WAN, masqueraded
    assert check.tcp_line(ns, sandbox.WAN_ADDR, sandbox.WAN_PORT) == sandbox.HOST_ADDR
    # the lease is the client's, not a resource of vnet's: nothing to change
    assert world.plan(topo).actions == []
    status = {x["endpoint"]: x for x in udhcpc.leases(world.state_of(topo.name))}
    assert status["c1"]["address"] == str(leased) and status["c1"]["router"] == "10.77.0.1"

    # renewal on udhcpc's own timer (half of the 2-minute lease): dnsmasq's expiry moves on
    first = _dnsmasq_expiry(world, topo, str(leased.ip))
    assert first is not None
    t0 = time.monotonic()
    moved = wait_for("a renewal", lambda: (e := _dnsmasq_expiry(world, topo, str(leased.ip))) and e > first and e, 90, every=1)
    took = time.monotonic() - t0
    assert moved - first >= 30
    # dnsmasq records the renewal before the client's script writes it down: wait for the client
    lease_file = udhcpc.files(world.state_of(topo.name), "c1")["lease"]
    assert wait_for("the client's renew event", lambda: udhcpc.read_lease(lease_file)["event"] == "renew", 10, every=0.1)
    assert _addr(ns) == str(leased)  # same address after renewal
    print(f"renewal seen after {took:.1f}s; expiry moved by {moved - first}s")

    # supervised: a client that dies is started again by the next apply, with the same lease
    os.kill(pid, signal.SIGKILL)
    wait_for("the client gone", lambda: _client_pid(world, topo, "c1") is None, 5)
    actions = world.apply(topo)
    assert [a.describe().split()[1] for a in actions] == ["dhcpclient"]
    new_pid = _client_pid(world, topo, "c1")
    assert new_pid is not None and new_pid != pid
    assert _addr(ns) == str(leased)

    world.destroy(topo.name)
    world.applied.discard(topo.name)
    assert not nsmod.exists(ns)
    assert process.is_gone(new_pid)
    assert not (udhcpc.ETC_NETNS / ns).exists()


def test_dhcp_client_taken_back_when_the_address_becomes_static(world):
    topo = spec.load_text(NAT_DHCP.format(name="eps"))
    world.apply(topo)
    ns = names.netns("eps", "c1")
    wait_for("a lease on c1", lambda: _addr(ns), 10)
    pid = _client_pid(world, topo, "c1")
    static = spec.load_text(NAT_DHCP.format(name="eps").replace("address: dhcp", "address: 10.77.0.30/24"))
    world.apply(static)
    assert process.is_gone(pid)
    assert _addrs(ns) == ["10.77.0.30/24"]  # the lease's address went with the client
    assert not (udhcpc.ETC_NETNS / ns / "resolv.conf").exists()
    assert world.plan(static).actions == []


def test_bridged_endpoint_leases_from_the_lan(world):
    """A bridged network's DHCP comes from the LAN: here the sandbox router's dnsmasq."""
    topo = spec.load_text(
        "name: epb\nnetworks:\n  lan: {mode: bridged, uplink: eth0}\n"
        "endpoints:\n  b1: {kind: netns, network: lan, address: dhcp}\n"
    )
    world.apply(topo)
    ns = names.netns("epb", "b1")
    leased = ipaddress.IPv4Interface(wait_for("a lease from the LAN", lambda: _addr(ns), 15))
    lo, hi = (ipaddress.IPv4Address(x) for x in sandbox.DHCP_RANGE)
    assert lo <= leased.ip <= hi
    assert check.ping(ns, sandbox.LAN_ROUTER)


MACVLAN = """
name: {name}
endpoints:
  m1: {{kind: macvlan, uplink: eth0, address: 192.0.2.51/24, gateway: 192.0.2.1}}
  m2: {{kind: macvlan, uplink: eth0, mode: private, address: 192.0.2.52/24}}
  m3: {{kind: macvlan, uplink: eth0, address: dhcp}}
"""


def _mac_of(ns: str, ifname: str = "eth0") -> str:
    out = check.run_in(ns, ["ip", "-o", "link", "show", "dev", ifname]).stdout.split()
    return out[out.index("link/ether") + 1]


def test_macvlan_endpoints_sit_on_the_lan(world):
    topo = spec.load_text(MACVLAN.format(name="emv"))
    world.apply(topo)
    m1, m2, m3 = (names.netns("emv", e) for e in ("m1", "m2", "m3"))
    # each on the sandbox host's eth0, in a namespace of its own, with a MAC of its own
    kind = check.run_in(m1, ["ip", "-d", "-o", "link", "show", "dev", "eth0"]).stdout
    assert "macvlan mode bridge" in kind
    assert "macvlan mode private" in check.run_in(m2, ["ip", "-d", "-o", "link", "show", "dev", "eth0"]).stdout
    assert _mac_of(m1) != _mac_of(world.host)
    # the LAN router directly, and beyond it through the default route
    assert check.ping(m1, sandbox.LAN_ROUTER)
    assert check.ping(m2, sandbox.LAN_ROUTER)
    assert check.tcp_line(m1, sandbox.WAN_ADDR, sandbox.WAN_PORT) == "192.0.2.51"  # the router sees the macvlan's own address
    # bridge mode talks to another macvlan of the NIC, private mode does not
    leased = ipaddress.IPv4Interface(wait_for("a lease on m3 from the LAN", lambda: _addr(m3), 15))
    lo, hi = (ipaddress.IPv4Address(x) for x in sandbox.DHCP_RANGE)
    assert lo <= leased.ip <= hi
    assert check.ping(m1, str(leased.ip))
    assert not check.ping(m2, str(leased.ip))
    assert world.plan(topo).actions == []
    # drift: a macvlan deleted by hand is made again
    check.run_in(m2, ["ip", "link", "del", "eth0"])
    assert [a.describe().split()[:2] for a in world.plan(topo).actions] == [["+", "macvlan"], ["+", "address"]]
    world.apply(topo)
    assert check.ping(m2, sandbox.LAN_ROUTER)
    world.destroy(topo.name)
    world.applied.discard(topo.name)
    assert not any(nsmod.exists(n) for n in (m1, m2, m3))
    assert "macvlan" not in check.run_in(world.host, ["ip", "-d", "link"]).stdout


def test_macvlan_in_a_borrowed_namespace_is_found_by_destroy(world):
    inner = "emb-mine"
    nsmod.create(inner).close()
    try:
        topo = spec.load_text("name: emb\nendpoints:\n  m: {kind: macvlan, uplink: eth0, netns: emb-mine, ifname: lan0, address: 192.0.2.61/24}\n")
        world.apply(topo)
        assert check.ping(inner, sandbox.LAN_ROUTER)
        # destroy by name only (no topology: as `vnet destroy` after the file is gone)
        world.destroy("emb")
        world.applied.discard("emb")
        assert nsmod.exists(inner)  # borrowed: left
        assert "lan0" not in check.run_in(inner, ["ip", "-o", "link"]).stdout
    finally:
        nsmod.remove(inner)


def test_macvlan_on_a_missing_uplink_is_refused_and_leaves_nothing(world):
    topo = spec.load_text("name: emx\nendpoints:\n  m: {kind: macvlan, uplink: nosuch0, address: 192.0.2.71/24}\n")
    with pytest.raises(Exception) as err:
        world.apply(topo)
    assert "uplink nosuch0 not found" in str(err.value)
    assert not nsmod.exists(names.netns("emx", "m"))


def _reboot(world, topo, endpoints: list[str]) -> None:
    """What a reboot does to the sandbox host: every process vnet ran is gone, the endpoint
    namespaces and the host's vnet links and nft table are gone, /run is empty — but the lib
    directory (/var/lib/vnet; here <state>/.lib) is kept."""
    state = world.state_of(topo.name)
    for pidfile, marker in [(f["pid"], f["conf"]) for f in [dnsconf.files(state, n) for n in topo.networks]] + \
                           [(f["pid"], f["sh"]) for f in [udhcpc.files(state, e) for e in endpoints]]:
        pid = process.running(pidfile, marker=marker)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_for(f"pid {pid} gone", lambda: process.is_gone(pid), 5)
    for e in endpoints:
        nsmod.remove(names.netns(topo.name, e))
    for line in check.run_in(world.host, ["ip", "-o", "link"]).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        alias = check.run_in(world.host, ["cat", f"/sys/class/net/{name}/ifalias"]).stdout.strip()
        if alias.startswith(f"vnet:{topo.name}:"):
            check.run_in(world.host, ["ip", "link", "del", name])
    check.run_in(world.host, ["nft", "delete", "table", "inet", names.nft_table(topo.name)])
    for child in world.state.iterdir():
        # the sandbox's own files (its LAN's dnsmasq) are the outside world's, not the host's /run
        if child.name not in (".lib", "sandbox"):
            subprocess.run(["rm", "-rf", str(child)], check=True)


def test_a_simulated_reboot_rebuilds_the_network_and_the_old_lease(world):
    topo = spec.load_text(NAT_DHCP.format(name="epr"))
    world.apply(topo)
    ns = names.netns("epr", "c1")
    leased = wait_for("a lease on c1", lambda: _addr(ns), 10)
    leases = dnsconf.files(world.state_of(topo.name), "lan0")["leases"]
    assert leases.is_relative_to(world.state / ".lib")  # kept apart from /run's state
    before = _dnsmasq_expiry(world, topo, leased.split("/")[0])
    _reboot(world, topo, ["c1", "c2"])
    assert not nsmod.exists(ns) and not world.state_of(topo.name).exists() and leases.exists()
    t0 = time.monotonic()
    world.apply(topo)
    again = wait_for("a lease after the reboot", lambda: _addr(ns), 10)
    took = time.monotonic() - t0
    assert again == leased  # the old address back: dnsmasq read its lease file
    assert _dnsmasq_expiry(world, topo, leased.split("/")[0]) >= before
    assert check.ping(ns, sandbox.WAN_ADDR) and check.ping(names.netns("epr", "c2"), "10.77.0.1")
    assert world.plan(topo).actions == []
    print(f"rebuilt after the simulated reboot, lease back, in {took:.2f}s")
