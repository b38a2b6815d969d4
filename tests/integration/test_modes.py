"""The four seed modes, each applied in a fresh sandbox and proven with real traffic."""

from __future__ import annotations

import ipaddress
import subprocess

from vnet import check, sandbox

from . import probe, snapshot

WAN = sandbox.WAN_ADDR


def test_isolated_endpoints_reach_only_each_other(world):
    topo = world.load("isolated.yaml")
    before = snapshot.take(world.host)
    world.apply(topo)
    assert check.ping("iso-a", "10.77.0.11")
    assert check.ping("iso-b", "10.77.0.10")
    # the host has no address on the bridge
    assert not any(a[0] == "vb-iso-lab" for a in snapshot.take(world.host)["addresses"] if ":" not in a[1])
    assert world.plan(topo).actions == []

    def reached() -> dict[str, bool]:
        return {
            "host -> a": check.ping(world.host, "10.77.0.10"),
            "a -> host": check.ping("iso-a", sandbox.HOST_ADDR),
            "a -> LAN router": check.ping("iso-a", sandbox.LAN_ROUTER),
            "a -> internet tcp": check.tcp_line("iso-a", WAN, sandbox.WAN_PORT, timeout_s=1) is not None,
            "LAN router -> a": check.ping(world.sb.lan, "10.77.0.10"),
        }

    # routes both ways and a host that forwards: only vnet's firewall keeps the network isolated
    with probe.routed(world.host, "vb-iso-lab", "10.77.0.0/24", ["iso-a"]):
        assert not any((got := reached()).values()), got
        with probe.firewall_removed(world, topo):  # the control: without vnet's rules all of it gets through
            assert all((got := reached()).values()), got
        assert not any((got := reached()).values()), got
        assert check.ping("iso-a", "10.77.0.11")
    world.destroy(topo.name)
    assert snapshot.take(world.host) == before


def test_host_mode_reaches_host_and_no_further(world):
    topo = world.load("host.yaml")
    before = snapshot.take(world.host)
    world.apply(topo)
    assert check.ping("hst-a", "192.168.50.11")
    assert check.ping("hst-a", "192.168.50.1")  # the host, on the bridge
    assert check.ping(world.host, "192.168.50.10")
    with check.Listener(world.host, 9000, "192.168.50.1"):
        assert check.tcp_line("hst-b", "192.168.50.1", 9000) == "192.168.50.11"
    # nothing is forwarded beyond the host
    assert not check.ping("hst-a", sandbox.LAN_ROUTER)
    assert check.tcp_line("hst-a", WAN, sandbox.WAN_PORT, timeout_s=1) is None
    world.destroy(topo.name)
    assert snapshot.take(world.host) == before


def test_nat_masquerades_out_and_blocks_in(world):
    topo = world.load("nat.yaml")
    before = snapshot.take(world.host)
    world.apply(topo)
    assert check.ping("lab-c1", "192.168.223.11")
    assert check.ping("lab-c1", WAN)
    # the internet sees the host's uplink address, not the endpoint's
    assert check.tcp_line("lab-c1", WAN, sandbox.WAN_PORT) == sandbox.HOST_ADDR
    assert check.tcp_line("lab-c2", WAN, sandbox.WAN_PORT) == sandbox.HOST_ADDR
    # the sandbox's router routes 192.168.0.0/16 to the host: only vnet's firewall keeps the WAN out
    with check.Listener("lab-c1", 9000):
        assert check.tcp_line("lab-c2", "192.168.223.10", 9000) == "192.168.223.11"
        assert check.tcp_line(world.sb.wan, "192.168.223.10", 9000, timeout_s=1) is None
    assert not check.ping(world.sb.wan, "192.168.223.10")
    # forwarding is on only where NAT needs it; the host-wide switch stays off
    assert snapshot.sysctl(world.host, "net/ipv4/conf/eth0/forwarding") == "1"
    assert snapshot.sysctl(world.host, "net/ipv4/ip_forward") == before["sysctl"]["ip_forward"]
    world.destroy(topo.name)
    after = snapshot.take(world.host)
    assert after["sysctl"]["eth0.forwarding"] == before["sysctl"]["eth0.forwarding"]
    assert after == before


def test_bridged_moves_host_addressing_and_endpoint_gets_lan_dhcp(world):
    topo = world.load("bridged.yaml")
    before = snapshot.take(world.host)
    assert check.ping(world.host, WAN)
    world.apply(topo)
    state = snapshot.take(world.host)
    # the host's address and default route now live on the bridge, with the uplink's MAC
    assert ("br-lan", sandbox.HOST_ADDR, 24) in state["addresses"]
    assert not any(a[0] == "eth0" and a[1] == sandbox.HOST_ADDR for a in state["addresses"])
    links = {link["ifname"]: link for link in state["links"]}
    assert links["eth0"]["master"] == "br-lan"
    assert links["br-lan"]["address"] == links["eth0"]["address"]
    assert any('"dev": "br-lan"' in r and '"dst": "default"' in r for r in state["routes"])
    assert check.ping(world.host, WAN)
    assert check.tcp_line(world.host, WAN, sandbox.WAN_PORT) == sandbox.HOST_ADDR
    # the endpoint takes a lease from the LAN's DHCP server, as a VM would
    leased = ipaddress.IPv4Interface(check.dhcp_client("brd-c1"))
    lo, hi = (ipaddress.IPv4Address(a) for a in sandbox.DHCP_RANGE)
    assert lo <= leased.ip <= hi
    assert check.ping("brd-c1", sandbox.LAN_ROUTER)
    assert check.tcp_line("brd-c1", WAN, sandbox.WAN_PORT) == str(leased.ip)
    world.destroy(topo.name)
    assert snapshot.take(world.host) == before
    assert check.ping(world.host, WAN)


def test_bridged_keeps_a_host_whose_gateway_is_reached_by_a_link_route(world):
    """Hosting providers give a /32 and a gateway outside it: `192.0.2.1 dev eth0 scope link` plus
    `default via 192.0.2.1`. The link route must reach the bridge before the default route, or the
    host is cut off."""
    host = world.host

    def ip(*args: str) -> None:
        subprocess.run(["ip", "-n", host, *args], check=True, capture_output=True)

    ip("addr", "del", f"{sandbox.HOST_ADDR}/24", "dev", "eth0")
    ip("addr", "add", f"{sandbox.HOST_ADDR}/32", "dev", "eth0")
    ip("route", "add", f"{sandbox.LAN_ROUTER}/32", "dev", "eth0", "scope", "link")
    ip("route", "add", "default", "via", sandbox.LAN_ROUTER, "dev", "eth0")
    assert check.ping(host, WAN)
    topo = world.load("bridged.yaml")
    before = snapshot.take(host)
    world.apply(topo)
    state = snapshot.take(host)
    assert ("br-lan", sandbox.HOST_ADDR, 32) in state["addresses"]
    assert any('"dev": "br-lan"' in r and '"dst": "default"' in r for r in state["routes"])
    assert any('"dev": "br-lan"' in r and f'"dst": "{sandbox.LAN_ROUTER}"' in r for r in state["routes"])
    assert check.ping(host, WAN)
    world.destroy(topo.name)
    assert snapshot.take(host) == before
    assert check.ping(host, WAN)
