"""Dual stack, with real IPv6 traffic in the sandbox: the LAN advertises 2001:db8:1::/64 to the
host, the WAN answers at 2001:db8:ffff::10 (ping and the TCP who-am-I responder)."""

from __future__ import annotations

import subprocess

from vnet import check, sandbox, spec

from . import snapshot

WAN6 = sandbox.WAN_ADDR6
PORT = sandbox.WAN_PORT


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
    assert snapshot.take(world.host) == before


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
