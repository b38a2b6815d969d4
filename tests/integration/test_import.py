"""`vnet import` and `vnet adopt` on the four classic topologies, built by hand the way a Linux
networking guide builds them (ip, ip tuntap, sysctl, iptables), inside the sandbox's host
namespace: import writes a file, adopt takes it over, plan is empty, traffic is as before, and
destroy leaves the host as it was before the script ran."""

from __future__ import annotations

import subprocess

import pytest

import ipaddress
import json

from vnet import api, sandbox, spec
from vnet.drivers import ns as nsmod
from vnet.sandbox import HOST_ADDR, WAN_ADDR

from tests.integration import snapshot
from tests.integration.probe import wait_for


def sh(ns: str, script: str) -> None:
    """The script as root in the host namespace `ns`. nsenter, not `ip netns exec`: that one also
    enters a mount namespace of its own, where the `ip netns add` of a script would stay."""
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", "sh", "-euxc", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def ping(ns: str, to: str, tries: int = 5) -> bool:
    """True once one echo is answered; new links may still be finishing address detection, so up
    to `tries` echoes a second apart (a bounded wait for the answer, not a sleep)."""
    argv = ["ip", "netns", "exec", ns, "busybox", "ping", "-c1", "-W1", to]
    return any(subprocess.run(argv, capture_output=True).returncode == 0 for _ in range(tries))


# each: (script run in the sandbox host namespace, namespaces it makes, pings (from, to) that work)
PRIVATE = """
ip link add br0 type bridge
ip link set br0 up
ip tuntap add tap0 mode tap user nobody
ip link set tap0 master br0
ip link set tap0 up
ip netns add {c1}
ip link add veth-c1 type veth peer name eth0 netns {c1}
ip link set veth-c1 master br0
ip link set veth-c1 up
ip -n {c1} addr add 10.77.0.11/24 dev eth0
ip -n {c1} link set eth0 up
ip netns add {c2}
ip link add veth-c2 type veth peer name eth0 netns {c2}
ip link set veth-c2 master br0
ip link set veth-c2 up
ip -n {c2} addr add 10.77.0.12/24 dev eth0
ip -n {c2} link set eth0 up
"""

HOSTONLY = """
ip link add br0 type bridge
ip addr add 10.78.0.1/24 dev br0
ip link set br0 up
ip tuntap add tap0 mode tap user nobody
ip link set tap0 master br0
ip link set tap0 up
ip netns add {c1}
ip link add veth-c1 type veth peer name eth0 netns {c1}
ip link set veth-c1 master br0
ip link set veth-c1 up
ip -n {c1} addr add 10.78.0.11/24 dev eth0
ip -n {c1} link set eth0 up
ip -n {c1} route add default via 10.78.0.1
"""

NAT = """
ip link add br0 type bridge
ip addr add 10.79.0.1/24 dev br0
ip link set br0 up
ip tuntap add tap0 mode tap user nobody
ip link set tap0 master br0
ip link set tap0 up
ip netns add {c1}
ip link add veth-c1 type veth peer name eth0 netns {c1}
ip link set veth-c1 master br0
ip link set veth-c1 up
ip -n {c1} addr add 10.79.0.11/24 dev eth0
ip -n {c1} link set eth0 up
ip -n {c1} route add default via 10.79.0.1
sysctl -w net.ipv4.conf.br0.forwarding=1
sysctl -w net.ipv4.conf.eth0.forwarding=1
iptables -t nat -A POSTROUTING -s 10.79.0.0/24 ! -d 10.79.0.0/24 -o eth0 -j MASQUERADE
"""

BRIDGED = """
ip link add br0 type bridge
ip link set br0 up
ip link set eth0 master br0
ip addr del {host_addr}/24 dev eth0
ip addr add {host_addr}/24 dev br0
ip route add default via 192.0.2.1 dev br0
ip tuntap add tap0 mode tap user nobody
ip link set tap0 master br0
ip link set tap0 up
ip netns add {c1}
ip link add veth-c1 type veth peer name eth0 netns {c1}
ip link set veth-c1 master br0
ip link set veth-c1 up
ip -n {c1} addr add 192.0.2.61/24 dev eth0
ip -n {c1} link set eth0 up
ip -n {c1} route add default via 192.0.2.1
"""

CASES = {
    "private": (PRIVATE, ("c1", "c2"), [("c1", "10.77.0.12"), ("c2", "10.77.0.11")], "isolated"),
    "hostonly": (HOSTONLY, ("c1",), [("c1", "10.78.0.1"), ("host", "10.78.0.11")], "host"),
    "nat": (NAT, ("c1",), [("c1", "10.79.0.1"), ("c1", WAN_ADDR)], "nat"),
    "bridged": (BRIDGED, ("c1",), [("c1", "192.0.2.1"), ("c1", WAN_ADDR), ("host", "192.0.2.61")], "bridged"),
}


def _ipv6_settled(ns: str, slaac_on: str | None) -> bool:
    """The kernel is done configuring IPv6 by itself: every link with a carrier has its link-local
    address (made when linkwatch reports the carrier, which may come after the first pings),
    none is tentative, and `slaac_on` has its address from the LAN's router advertisement."""
    links = json.loads(subprocess.run(["ip", "-n", ns, "-j", "addr", "show"], capture_output=True, text=True, check=True).stdout)
    lan6 = ipaddress.IPv6Network(sandbox.LAN6)
    for link in links:
        infos = [i for i in link.get("addr_info", []) if i["family"] == "inet6"]
        if any(i.get("tentative") for i in infos):
            return False
        if "LOWER_UP" in link["flags"] and link["ifname"] != "lo" and not any(i["local"].startswith("fe80:") for i in infos):
            return False
        if link["ifname"] == slaac_on and not any(ipaddress.IPv6Address(i["local"]) in lan6 for i in infos):
            return False
    return True


def _autoconf(address: str) -> bool:
    """An IPv6 address the kernel makes by itself: link-local, or from the LAN's advertisement."""
    ip = ipaddress.ip_address(address)
    return ip.version == 6 and (ip.is_link_local or ip in ipaddress.IPv6Network(sandbox.LAN6))


def _configured(snap: dict) -> dict:
    """A snapshot without what IPv6 autoconfiguration owns. A router advertisement's address and
    routes are per device and come and go with the router's timing: one the bridge made for its
    own MAC goes back to the NIC with the rest of the addressing on destroy (with what is left of its
    lifetime: the host keeps IPv6 until the NIC hears the next advertisement)."""
    routes = [r for r in snap["routes"] if not _ra_route(json.loads(r))]
    return {**snap, "addresses": [a for a in snap["addresses"] if not _autoconf(a[1])], "routes": routes}


def _ra_route(route: dict) -> bool:
    """A route an advertisement gave, or the prefix route of an autoconfigured address."""
    dst = route.get("dst", "")
    return route.get("protocol") == "ra" or (":" in dst and _autoconf(dst.split("/")[0]))


@pytest.fixture
def made(world):
    """Namespaces a script makes, removed whatever happens."""
    names: list[str] = []
    yield names
    for n in names:
        if nsmod.exists(n) or nsmod.half_made(n):
            nsmod.remove(n)


@pytest.mark.parametrize("case", sorted(CASES))
def test_import_adopt_destroy(world, made, tmp_path, case):
    script, nsnames, pings, mode = CASES[case]
    ns = {n: f"{world.name}{n}" for n in nsnames}  # unique per world: tests side by side never share one
    made.extend(ns.values())
    before = snapshot.take(world.host)

    sh(world.host, script.format(host_addr=HOST_ADDR, **ns))
    where = {"host": world.host, **ns}
    for src, dst in pings:
        assert ping(where[src], dst), f"the hand-made network does not work: {src} → {dst}"
    # what the kernel adds by itself is in place before the picture that adopt is held to
    wait_for(lambda: _ipv6_settled(world.host, "br0" if mode == "bridged" else None), 30, "IPv6 autoconfiguration of the hand-made network")
    built = snapshot.take(world.host)

    text = api.import_host(world.host, name="guide")
    path = tmp_path / "guide.yaml"
    path.write_text(text)
    topo = spec.load(path)  # what import wrote validates
    (net,) = topo.networks.values()
    assert net.mode == mode, text
    assert net.bridge == "br0"
    assert {ep.netns for ep in topo.endpoints.values() if ep.kind == "netns"} == set(ns.values()), text
    assert any(ep.kind == "tap" and ep.ifname == "tap0" and ep.owner == "nobody" for ep in topo.endpoints.values()), text

    result = api.adopt(path, netns=world.host, state_dir=world.state)
    world.applied.add(topo.name)
    assert result.marked > 0
    assert not any(a.startswith(("+ bridge", "+ veth", "+ tap", "+ netns", "- ")) for a in result.actions), result.actions
    assert api.plan(topo, netns=world.host, state_dir=world.state).actions == []
    for src, dst in pings:
        assert ping(where[src], dst), f"after adopt: {src} → {dst}"
    after = snapshot.take(world.host)
    # nothing was rebuilt: the same links with the same names and addresses (marks and vnet's table aside)
    assert [li["ifname"] for li in after["links"]] == [li["ifname"] for li in built["links"]]
    assert _configured(after)["addresses"] == _configured(built)["addresses"]
    if mode == "nat":
        assert "MASQUERADE" not in after["iptables"]  # vnet's table does it now
        assert ping(ns["c1"], WAN_ADDR)

    api.destroy(topo.name, netns=world.host, state_dir=world.state, force=True)
    world.applied.discard(topo.name)
    for n in ns.values():
        assert not nsmod.exists(n), f"destroy left namespace {n}, which was imported"
    final = snapshot.take(world.host)
    for key in ("links", "addresses", "routes", "nft", "iptables", "sysctl"):
        assert _configured(final)[key] == _configured(before)[key], key
    if mode == "bridged":  # the host kept IPv6 on its NIC
        assert any(name == "eth0" and ipaddress.ip_address(a) in ipaddress.IPv6Network(sandbox.LAN6) for name, a, _ in final["addresses"])
