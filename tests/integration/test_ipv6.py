"""Dual stack, with real IPv6 traffic in the sandbox: the LAN advertises 2001:db8:1::/64 to the
host, the WAN answers at 2001:db8:ffff::10 (ping and the TCP who-am-I responder)."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time

import pytest

from vnet import check, names, sandbox, spec
from vnet.spec.validate import dhcp6_range

from . import snapshot
from .test_overlay import wait_for

WAN6 = sandbox.WAN_ADDR6
PORT = sandbox.WAN_PORT


def same(before: dict, after: dict) -> None:
    """before == after, and where not, only the parts that differ in the message."""
    diff = {}
    for key in before:
        if before[key] != after.get(key):
            if isinstance(before[key], list):
                diff[key] = ("-", [x for x in before[key] if x not in after[key]], "+", [x for x in after[key] if x not in before[key]])
            elif isinstance(before[key], dict):
                diff[key] = {k: (before[key].get(k), after[key].get(k)) for k in set(before[key]) | set(after[key]) if before[key].get(k) != after[key].get(k)}
            else:
                diff[key] = "differs"
    assert not diff, diff


def topo(text: str):
    return spec.load_text(text)


def resolve(ns: str, name: str, server: str, qtype: str = "AAAA") -> str:
    proc = check.run_in(ns, ["busybox", "nslookup", "-type=" + qtype, name, server], timeout=10)
    return proc.stdout


NAT = """
name: ds
networks:
  lan0:
    mode: nat
    subnet: 192.168.224.0/24
    subnet6: 2001:db8:77::/64
    uplink: eth0
    {extra}
endpoints:
  a: {{kind: netns, network: lan0, address: 192.168.224.10/24, address6: "2001:db8:77::10/64"}}
  b: {{kind: netns, network: lan0, address: 192.168.224.11/24, address6: "2001:db8:77::11/64"}}
"""


def test_nat66_egress_is_seen_as_the_host(world):
    t = topo(NAT.format(extra=""))
    before = snapshot.take(world.host)
    host6 = sandbox.host_ipv6(world.host)
    world.apply(t)
    assert check.ping("ds-a", "2001:db8:77::11")  # endpoint to endpoint
    assert check.ping("ds-a", "2001:db8:77::1")  # the gateway
    assert check.ping("ds-a", WAN6)
    assert check.ping("ds-a", sandbox.WAN_ADDR)  # IPv4 still works beside it
    # NAT66: the internet sees the host's address, not the endpoint's
    assert check.tcp_line("ds-a", WAN6, PORT) == host6
    assert check.tcp_line("ds-a", sandbox.WAN_ADDR, PORT) == sandbox.HOST_ADDR
    # nothing from outside opens a connection in, although the LAN routes 2001:db8::/32 here
    with check.Listener("ds-a", 9000, "::"):
        assert check.tcp_line("ds-b", "2001:db8:77::10", 9000) == "2001:db8:77::11"
        assert check.tcp_line(world.sb.wan, "2001:db8:77::10", 9000, timeout_s=1) is None
    assert not check.ping(world.sb.wan, "2001:db8:77::10")
    # forwarding per interface: force_forwarding where packets enter, never the host-wide switch;
    # the uplink stays a host and keeps taking the LAN's advertisements
    assert snapshot.sysctl(world.host, "net/ipv6/conf/eth0/force_forwarding") == "1"
    assert snapshot.sysctl(world.host, "net/ipv6/conf/vb-ds-lan0/force_forwarding") == "1"
    assert snapshot.sysctl(world.host, "net/ipv6/conf/all/forwarding") == "0"
    assert snapshot.sysctl(world.host, "net/ipv6/conf/eth0/forwarding") == before["sysctl"]["ipv6.eth0.forwarding"]
    assert snapshot.sysctl(world.host, "net/ipv6/conf/eth0/accept_ra") == before["sysctl"]["ipv6.eth0.accept_ra"]
    assert sandbox.default_route6(world.host) == "eth0"
    assert snapshot.sysctl(world.host, "net/ipv6/conf/vb-ds-lan0/accept_ra") == "0"  # guests advertise nothing to the host
    assert world.plan(t).actions == []
    world.destroy(t.name)
    same(before, snapshot.take(world.host))


def test_bridge_ports_carry_no_ipv6_of_their_own(world):
    """A veth's host end and a tap are bridge ports: IPv6 is off on them (no link-local address,
    no routes in the host's IPv6 table, which the kernel walks on every link event), while the
    bridge keeps its own and the endpoints behind the ports still talk IPv6 to each other."""
    t = topo(NAT.format(extra="") + "  t: {kind: tap, network: lan0}\n")
    before = snapshot.take(world.host)
    world.apply(t)
    ports = [names.endpoint_veth("ds", "a", None), names.endpoint_veth("ds", "b", None), names.endpoint_tap("ds", "t", None)]
    for port in ports:
        assert snapshot.sysctl(world.host, f"net/ipv6/conf/{port}/disable_ipv6") == "1", port
        assert check.run_in(world.host, ["ip", "-6", "-o", "addr", "show", "dev", port]).stdout.strip() == "", port
        assert check.run_in(world.host, ["ip", "-6", "-o", "route", "show", "table", "all", "dev", port]).stdout.strip() == "", port
    assert snapshot.sysctl(world.host, "net/ipv6/conf/vb-ds-lan0/disable_ipv6") == "0"
    assert check.ping("ds-a", "2001:db8:77::11")  # endpoint to endpoint, across the ports
    assert check.ping("ds-a", "2001:db8:77::1")  # the bridge's address
    assert check.run_in("ds-a", ["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"]).stdout.strip() != ""
    world.destroy(t.name)
    same(before, snapshot.take(world.host))


def test_nat6_false_routes_the_prefix(world):
    t = topo(NAT.format(extra="nat6: false"))
    world.apply(t)
    # the WAN sees the endpoint's own address: the LAN routes 2001:db8::/32 to the host
    assert check.tcp_line("ds-a", WAN6, PORT) == "2001:db8:77::10"
    assert check.ping("ds-b", WAN6)
    # routed, still guarded: the outside opens nothing
    with check.Listener("ds-a", 9000, "::"):
        assert check.tcp_line(world.sb.wan, "2001:db8:77::10", 9000, timeout_s=1) is None
    # IPv4 is masqueraded as before
    assert check.tcp_line("ds-a", sandbox.WAN_ADDR, PORT) == sandbox.HOST_ADDR
    world.destroy(t.name)


def wait_global6(ns: str, prefix: str, timeout: float = 10.0) -> str | None:
    """The address `ns`'s eth0 took by SLAAC in `prefix`, waiting for it (bounded)."""
    import ipaddress
    import time

    net = ipaddress.IPv6Network(prefix)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "-n", ns, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            addr = line.split()[3].split("/")[0]
            if "tentative" not in line and ipaddress.IPv6Address(addr) in net:
                return addr
        time.sleep(0.1)
    return None


HOST = """
name: h6
networks:
  lab:
    mode: host
    subnet: 192.168.51.0/24
    subnet6: fd00:51::/64
    dns: {domain: h6.test}
endpoints:
  a: {kind: netns, network: lab, address: 192.168.51.10/24, address6: "fd00:51::10/64"}
  c: {kind: netns, network: lab, address: 192.168.51.12/24}
"""


def test_host_mode_dual_stack_slaac_and_aaaa(world):
    t = topo(HOST)
    before = snapshot.take(world.host)
    world.apply(t)
    from vnet import dnsconf
    from vnet.facts import guest_mac
    import ipaddress

    # c has no address6: it takes one by SLAAC from vnet's advertisements, the one DNS predicts
    slaac = wait_global6("h6-c", "fd00:51::/64")
    assert slaac == str(dnsconf.eui64(ipaddress.IPv6Network("fd00:51::/64"), guest_mac(t, "c")))
    assert check.ping("h6-a", slaac)
    assert check.ping("h6-c", "fd00:51::10")
    assert check.ping("h6-a", "fd00:51::1")  # the host, on the bridge
    assert check.ping(world.host, "fd00:51::10")
    with check.Listener(world.host, 9000, "fd00:51::1"):
        assert check.tcp_line("h6-c", "fd00:51::1", 9000) == slaac
    out = resolve("h6-a", "c.h6.test", "fd00:51::1")
    assert slaac in out, out
    assert "fd00:51::10" in resolve("h6-c", "a.h6.test", "192.168.51.1")
    # nothing forwarded beyond the host
    assert not check.ping("h6-a", WAN6)
    assert check.tcp_line("h6-a", WAN6, PORT, timeout_s=1) is None
    world.destroy(t.name)
    same(before, snapshot.take(world.host))


ISO = """
name: i6
networks:
  lab:
    mode: isolated
    subnet: 10.78.0.0/24
    subnet6: fd00:78::/64
endpoints:
  a: {kind: netns, network: lab, address: 10.78.0.10/24, address6: "fd00:78::10/64"}
  c: {kind: netns, network: lab, address: 10.78.0.12/24}
"""


def test_isolated_dual_stack_reaches_only_its_own(world):
    t = topo(ISO)
    before = snapshot.take(world.host)
    world.apply(t)
    slaac = wait_global6("i6-c", "fd00:78::/64")
    assert slaac is not None
    assert check.ping("i6-a", slaac)
    assert check.ping("i6-c", "fd00:78::10")
    # router lifetime 0: the prefix, but no default route
    assert sandbox.default_route6("i6-c") is None
    # the host takes no address from the isolated network's advertisements and answers nothing there
    assert not [a for a in snapshot.take(world.host)["addresses"] if a[0] == "vb-i6-lab" and a[1].startswith("fd00:78:")]
    assert not check.ping("i6-a", sandbox.host_ipv6(world.host))
    assert not check.ping("i6-a", WAN6)
    world.destroy(t.name)
    same(before, snapshot.take(world.host))


def test_bridged_moves_ipv6_and_keeps_the_default_route(world):
    t = world.load("bridged.yaml")
    before = snapshot.take(world.host)
    host6 = sandbox.host_ipv6(world.host)
    assert sandbox.default_route6(world.host) == "eth0"
    world.apply(t)
    state = snapshot.take(world.host)
    # the host's IPv6 address and its default route (from the LAN's advertisements) are the bridge's now
    assert any(a[0] == "br-lan" and a[1] == host6 for a in state["addresses"])
    assert not any(a[0] == "eth0" and a[1] == host6 for a in state["addresses"])
    assert sandbox.default_route6(world.host) == "br-lan"
    assert check.ping(world.host, WAN6)
    assert check.tcp_line(world.host, WAN6, PORT) == host6
    # an endpoint on the bridge takes its IPv6 address from the LAN's router
    slaac = wait_global6("brd-c1", sandbox.LAN6)
    assert slaac is not None
    assert check.tcp_line("brd-c1", WAN6, PORT) == slaac
    world.destroy(t.name)
    assert sandbox.default_route6(world.host) == "eth0"
    same(before, snapshot.take(world.host))
    assert check.ping(world.host, WAN6)


TWO = """
name: two6
networks:
  n1: {mode: nat, subnet: 192.168.231.0/24, subnet6: "fd00:231::/64", uplink: eth0}
  n2: {mode: nat, subnet: 192.168.232.0/24, subnet6: "fd00:232::/64", uplink: eth0}
endpoints:
  a: {kind: netns, network: n1, address: 192.168.231.10/24, address6: "fd00:231::10/64"}
  b: {kind: netns, network: n2, address: 192.168.232.10/24, address6: "fd00:232::10/64"}
%s
"""


def test_allow_and_isolation_between_networks_hold_for_ipv6(world):
    t = topo(TWO % "")
    world.apply(t)
    with check.Listener("two6-b", 80, "::"):
        assert check.tcp_line("two6-a", "fd00:232::10", 80, timeout_s=1) is None  # networks are isolated
    assert not check.ping("two6-a", "fd00:232::10")
    t = topo(TWO % "allow: [{from: n1, to: n2, proto: tcp, ports: [80]}]")
    world.apply(t)
    with check.Listener("two6-b", 80, "::"):
        assert check.tcp_line("two6-a", "fd00:232::10", 80) == "fd00:231::10"  # routed, not masqueraded
        assert check.tcp_line("two6-b", "fd00:231::10", 80, timeout_s=1) is None  # one way only
    assert not check.ping("two6-a", "fd00:232::10")  # only what the rule names
    world.destroy(t.name)


def test_control_an_interface_forwarding_switch_drops_the_hosts_ra_route(world):
    """Why vnet never sets `net.ipv6.conf.<if>.forwarding`: switching it on for any interface (here a
    veth of the host that nothing uses) drops the uplink's default route from the LAN's advertisements."""
    assert sandbox.default_route6(world.host) == "eth0"
    subprocess.run(["ip", "-n", world.host, "link", "add", "ctl6a", "type", "veth", "peer", "name", "ctl6b"], check=True)
    try:
        snapshot.inside(world.host, lambda: open("/proc/sys/net/ipv6/conf/ctl6a/forwarding", "w").write("1\n"))
        assert sandbox.default_route6(world.host) is None
    finally:
        subprocess.run(["ip", "-n", world.host, "link", "del", "ctl6a"], check=True)


DHCP6 = """
name: d6
networks:
  lan:
    mode: host
    subnet: 192.168.87.0/24
    subnet6: "fd00:87::/64"
    dhcp6: true
    dns: {domain: d6.test}
endpoints:
  c: {kind: netns, network: lan, address: 192.168.87.12/24}
"""

DHCLIENT_SCRIPT = """#!/bin/sh
# dhclient -6 calls this (instead of dhclient-script, which would rewrite the host's resolv.conf),
# with an environment of its own making: where to write comes in the text
case "$reason" in
  BOUND6|RENEW6|REBIND6)
    ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" nodad
    echo "$new_ip6_address" > "{out}" ;;
esac
"""


@pytest.mark.skipif(shutil.which("dhclient") is None, reason="needs ISC dhclient for a real DHCPv6 client (make test installs isc-dhcp-client)")
def test_dhcpv6_leases_from_the_range_names_the_client_and_carries_traffic(world, tmp_path):
    t = topo(DHCP6)
    world.apply(t)
    script, conf, out = tmp_path / "script.sh", tmp_path / "dhclient.conf", tmp_path / "leased"
    script.write_text(DHCLIENT_SCRIPT.replace("{out}", str(out)))
    script.chmod(0o755)
    conf.write_text('send fqdn.fqdn "c";\nsend fqdn.server-update on;\n')
    argv = ["dhclient", "-6", "-d", "-1", "-v", "-sf", str(script), "-cf", str(conf),
            "-lf", str(tmp_path / "leases"), "-pf", str(tmp_path / "pid"), "eth0"]
    # a DHCPv6 client binds its link-local address: wait until it has passed duplicate detection
    wait_for(lambda: "tentative" not in check.run_in("d6-c", ["ip", "-6", "addr", "show", "dev", "eth0"]).stdout, 15)
    client = subprocess.Popen(check.Namespace("d6-c").argv(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: out.exists() or client.poll() is not None, 30)
        assert out.exists(), client.stderr.read().decode() if client.poll() is not None else "no DHCPv6 lease within 30 s"
        leased = ipaddress.IPv6Address(out.read_text().strip())
        first, last = dhcp6_range(t, "lan")
        assert first <= leased <= last
        # the leased address carries traffic (the port may use an address vnet cannot know in advance),
        # on the link the router advertisement says is on-link
        wait_for(lambda: "fd00:87::/64" in check.run_in("d6-c", ["ip", "-6", "route"]).stdout, 15)
        assert check.ping("d6-c", "fd00:87::1")
        with check.Listener(world.host, 9000, "fd00:87::1"):
            assert check.tcp_line("d6-c", "fd00:87::1", 9000) == str(leased)
        assert str(leased) in resolve("d6-c", "c.d6.test", "fd00:87::1")
    finally:
        client.terminate()
        client.wait(timeout=10)
        client.stderr.close()
    world.destroy(t.name)
