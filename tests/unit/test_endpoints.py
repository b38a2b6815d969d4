"""Endpoint conveniences without root: `address: dhcp`, macvlan endpoints, the DHCP client's script."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vnet import graph
from vnet.desired import desired
from vnet.drivers import rtnl, udhcpc
from vnet.errors import SpecError, VnetError
from vnet.resources import make
from vnet.spec import load_text

BASE = """
name: t
networks:
  lan: {mode: nat, subnet: 10.9.0.0/24, dhcp: true}
  up: {mode: bridged, uplink: eth1}
endpoints:
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as err:
        load_text(text)
    return [f"{p.path}: {p.message}" for p in err.value.problems]


def test_address_dhcp_is_a_client_and_no_address():
    t = load_text(BASE + "  a: {kind: netns, network: lan, address: dhcp}\n")
    ep = t.endpoints["a"]
    assert ep.dhcp and ep.address is None
    kinds = [(r.kind, r.key) for r in desired(t)]
    assert ("dhcpclient", "t-a/eth0") in kinds
    assert not any(k == "address" and key.startswith("t-a/") for k, key in kinds)


def test_address_omitted_is_the_link_only():
    t = load_text(BASE + "  a: {kind: netns, network: lan}\n")
    assert not any(r.kind == "dhcpclient" for r in desired(t))


def test_a_dhcp_client_needs_a_server():
    assert problems("name: t\nnetworks:\n  h: {mode: host, subnet: 10.9.0.0/24}\nendpoints:\n  a: {kind: netns, network: h, address: dhcp}\n") == [
        "endpoints.a.address: networks.h serves no DHCP for the client to ask"]
    load_text(BASE + "  a: {kind: netns, network: up, address: dhcp}\n")  # bridged: the LAN's server


def test_dhcp_and_a_static_address_conflict():
    assert problems(BASE + "  a: {kind: netns, network: lan, dhcp: true, address: 10.9.0.5/24}\n") == [
        "endpoints.a.address: a static address and a DHCP client on one interface"]


def test_macvlan_desired():
    t = load_text(BASE + "  m: {kind: macvlan, uplink: eth0, mode: vepa, address: 192.0.2.50/24, gateway: 192.0.2.1}\n")
    rs = {r.id: r for r in desired(t)}
    mv = rs["macvlan:t-m"]
    assert (mv.get("uplink"), mv.get("mode"), mv.get("ifname"), mv.get("mark")) == ("eth0", "vepa", "eth0", "vnet:t:macvlan:m:eth0")
    assert "netns:t-m" in rs and "address:t-m/eth0/192.0.2.50/24" in rs
    assert rs["route:t-m/default"].get("gateway") == "192.0.2.1"


@pytest.mark.parametrize("line,expected", [
    ("  m: {kind: macvlan, uplink: eth1}\n", "endpoints.m.uplink: eth1 is a port of networks.up's bridge and takes no macvlan"),
    ("  m: {kind: macvlan, uplink: eth0, gateway: 192.0.2.1}\n", "endpoints.m.gateway: needs a static address to be reached through"),
    ("  m: {kind: macvlan, uplink: eth0, address: 192.0.2.5/24, gateway: 10.1.1.1}\n", "endpoints.m.gateway: 10.1.1.1 is not inside 192.0.2.0/24"),
    ("  m: {kind: macvlan, uplink: eth0, mode: passthru}\n", "endpoints.m.mode"),
    ("  m: {kind: macvlan, uplink: eth0, netns: t-a}\n  a: {kind: netns, network: lan}\n", "endpoints.m.netns: namespace 't-a' is also used by endpoints.a"),
])
def test_macvlan_refusals(line, expected):
    got = problems(BASE + line)
    assert len(got) == 1 and got[0].startswith(expected), got


def test_graph_shows_macvlan_and_dhcp():
    t = load_text(BASE + "  m: {kind: macvlan, uplink: eth0, address: dhcp}\n  a: {kind: netns, network: lan, address: dhcp}\n")
    g = graph.model(t)
    labels = " ".join(n.label for n in g.nodes)
    assert "macvlan (bridge) on eth0" in labels and "uplink eth0" in labels and "vnet's client" in labels
    assert "ep_m ---|\"macvlan bridge\"| up_eth0" in graph.mermaid(g)
    graph.dot(g)


def test_macvlan_request_encodes_link_mode_and_namespace():
    mtype, flags, body = rtnl.new_macvlan("eth0", 7, "private", netns_fd=9, mac="52:54:00:00:00:01")
    found = dict((k, bytes(v)) for k, v in rtnl.attrs(body, 16, len(body)))
    assert found[rtnl.IFLA_LINK] == (7).to_bytes(4, "little") and found[rtnl.IFLA_NET_NS_FD] == (9).to_bytes(4, "little")
    info = dict((k, bytes(v)) for k, v in rtnl.attrs(found[rtnl.IFLA_LINKINFO], 0, len(found[rtnl.IFLA_LINKINFO])))
    assert info[rtnl.IFLA_INFO_KIND].rstrip(b"\0") == b"macvlan"
    data = dict((k, bytes(v)) for k, v in rtnl.attrs(info[rtnl.IFLA_INFO_DATA], 0, len(info[rtnl.IFLA_INFO_DATA])))
    assert data[rtnl.IFLA_MACVLAN_MODE] == (1).to_bytes(4, "little")


# --- the DHCP client's event script, run by sh with what a server might send ---------------------


def _script(tmp_path: Path) -> Path:
    r = udhcpc.resource("t-a", "eth0", "a", "a")
    path = tmp_path / "s.sh"
    text = udhcpc.render(r, tmp_path)
    # run it against a stub `ip` that records its arguments, and a private /etc/netns
    stub = tmp_path / "ip"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/ip.log\n')
    stub.chmod(0o755)
    ip_line = " ".join(udhcpc._ip_program())
    text = text.replace(ip_line, str(stub)).replace(str(udhcpc.ETC_NETNS), str(tmp_path / "etc"))
    path.write_text(text)
    return path


def _event(tmp_path: Path, event: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(_script(tmp_path)), event], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True)


def test_script_configures_a_lease(tmp_path):
    proc = _event(tmp_path, "bound", ip="10.9.0.100", mask="24", router="10.9.0.1 10.9.0.2", dns="10.9.0.1", domain="lab.test",
                  lease="120", serverid="10.9.0.1")
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "ip.log").read_text()
    assert "addr replace 10.9.0.100/24 dev eth0 valid_lft 120 preferred_lft 120" in log
    assert "route replace default via 10.9.0.1 dev eth0 proto dhcp" in log
    resolv = (tmp_path / "etc" / "t-a" / "resolv.conf").read_text()
    assert resolv.startswith(udhcpc.RESOLV_MARK) and "search lab.test" in resolv and "nameserver 10.9.0.1" in resolv
    lease = udhcpc.read_lease(udhcpc.files(tmp_path, "a")["lease"])
    assert lease["address"] == "10.9.0.100/24" and lease["lease"] == "120" and lease["router"] == "10.9.0.1"


@pytest.mark.parametrize("env", [
    {"ip": "10.9.0.100;reboot", "mask": "24"},
    {"ip": "10.9.0.300", "mask": "24"},
    {"ip": "10.9.0.100", "mask": "24 dev lo"},
    {"ip": "10.9.0.100", "mask": "33"},
])
def test_script_refuses_what_no_server_should_send(tmp_path, env):
    proc = _event(tmp_path, "bound", **env)
    assert proc.returncode != 0
    assert not (tmp_path / "ip.log").exists()


def test_script_drops_hostile_dns_and_routers(tmp_path):
    proc = _event(tmp_path, "bound", ip="10.9.0.100", mask="24", router="$(reboot)", dns="10.9.0.1\noptions rotate 1.2.3.4;x",
                  domain="evil\nnameserver 6.6.6.6")
    assert proc.returncode == 0
    resolv = (tmp_path / "etc" / "t-a" / "resolv.conf").read_text()
    assert resolv.splitlines()[1:] == ["nameserver 10.9.0.1"]
    assert "route" not in (tmp_path / "ip.log").read_text()


def test_client_names_are_checked_before_they_reach_a_script(tmp_path):
    for bad in (dict(ns="x; reboot"), dict(ifname="eth0 -x"), dict(endpoint="../../etc/x")):
        r = make("dhcpclient", "k", **{**dict(ns="t-a", ifname="eth0", endpoint="a", hostname="a"), **bad})
        with pytest.raises(VnetError):
            udhcpc.render(r, tmp_path)


# --- the lib directory: what outlives a reboot ----------------------------------------------------


def test_lib_dir_derived_from_the_state_dir(tmp_path):
    from vnet import dnsconf, libdir

    assert libdir.lib_of(Path("/run/vnet/lab")) == Path("/var/lib/vnet/lab")
    assert libdir.lib_of(Path("/run/vnet/@h1/lab")) == Path("/var/lib/vnet/@h1/lab")
    assert libdir.lib_of(tmp_path / "state" / "@h1" / "lab") == tmp_path / "state" / ".lib" / "@h1" / "lab"
    assert dnsconf.files(Path("/run/vnet/lab"), "lan")["leases"] == Path("/var/lib/vnet/lab/dnsmasq-lan.leases")
    assert dnsconf.files(Path("/run/vnet/lab"), "lan")["pid"] == Path("/run/vnet/lab/dnsmasq-lan.pid")
    libdir.configure(tmp_path / "s", tmp_path / "persist")
    try:
        assert libdir.lib_of(tmp_path / "s" / "lab") == tmp_path / "persist" / "lab"
    finally:
        libdir.configure(tmp_path / "s", None)
    assert libdir.lib_of(tmp_path / "s" / "lab") == tmp_path / "s" / ".lib" / "lab"
