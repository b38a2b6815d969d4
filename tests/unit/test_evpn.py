"""`overlay: {control: evpn}`: the spec, the FRR config vnet renders (a golden file), the vxlan
device FRR fills, and where FRR comes in the plan."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from vnet import frrconf
from vnet.desired import desired
from vnet.errors import SpecError
from vnet.kinds import rank
from vnet.plan import diff
from vnet.spec import load_text

from tests.unit.test_overlay import H1, H2, H3, LAB, by, facts, problems

GOLDEN = Path(__file__).parent / "golden"
EVPN = LAB.replace("overlay: {vni: 4242}", "overlay: {vni: 4242, control: evpn}")


def frr_config(text: str, host_facts) -> str:
    (r,) = by(desired(load_text(text), host_facts), "frr").values()
    return r.get("config")


def test_golden_h1_frr_conf():
    """The FRR config host h1 renders for the three-host example (VNET_UPDATE_GOLDEN=1 rewrites the file)."""
    text = frr_config(EVPN, H1)
    path = GOLDEN / "evpn-h1.frr.conf"
    if os.environ.get("VNET_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_full_mesh_of_the_other_hosts_with_the_asn():
    conf = frr_config(EVPN + "evpn: {asn: 4200000001}\n", H3)
    assert "router bgp 4200000001" in conf and " bgp router-id 198.51.100.77" in conf
    for peer in ("192.0.2.11", "198.51.100.12"):
        assert f" neighbor {peer} remote-as 4200000001" in conf and f"  neighbor {peer} activate" in conf
    assert "198.51.100.77 remote-as" not in conf  # never itself
    assert "  advertise-all-vni" in conf
    # a host removed from hosts: is no peer any more
    fewer = EVPN.replace("  h2: 198.51.100.12\n", "").replace("host: h2, ", "host: h1, ")
    assert "198.51.100.12" not in frr_config(fewer, H3)


def test_each_daemon_reads_its_own_part():
    conf = frr_config(EVPN, H1)
    zebra, bgpd = frrconf.part(conf, "zebra"), frrconf.part(conf, "bgpd")
    assert "ip nht resolve-via-default" in zebra and "router bgp" not in zebra
    assert "router bgp 65000" in bgpd and "nht" not in bgpd
    for part in (zebra, bgpd):
        assert f"log file {frrconf.files(H1.state)['log']}" in part and part.startswith("! vnet: FRR of topology lab on host h1")


def test_no_frr_without_evpn_or_without_hosts():
    assert not by(desired(load_text(LAB), H1), "frr")
    assert by(desired(load_text(EVPN), H2), "frr")  # every host runs it, VM-only hosts too


def test_the_vxlan_device_of_an_evpn_network_is_left_to_frr():
    vx = by(desired(load_text(EVPN), H1), "vxlan")["vx-lab-lan"]
    assert vx.get("peers") == () and vx.get("macs") == () and vx.get("learning") is False
    assert vx.get("mark") == "vnet:lab:vxlan:lan:evpn"
    static = by(desired(load_text(LAB), H1), "vxlan")["vx-lab-lan"]
    assert static.get("mark") == "vnet:lab:vxlan:lan" and static.get("peers")


def test_frr_starts_after_the_vxlan_devices_addresses_and_firewall_and_stops_before_them():
    assert rank("vxlan") < rank("frr") and rank("address") < rank("frr") and rank("ruleset") < rank("frr")
    rs = desired(load_text(EVPN), H1)
    creates = [a.resource.kind for a in diff(rs, {})]
    assert creates.index("frr") > max(i for i, k in enumerate(creates) if k in ("vxlan", "address", "ruleset"))
    deletes = [a.resource.kind for a in diff([], {r.id: r for r in rs})]
    assert deletes.index("frr") < min(i for i, k in enumerate(deletes) if k in ("vxlan", "address", "ruleset"))


def test_a_new_config_restarts_frr_and_the_same_one_does_nothing():
    rs = desired(load_text(EVPN), H1)
    assert diff(rs, {r.id: r for r in rs}) == []
    other = desired(load_text(EVPN + "evpn: {asn: 65001}\n"), H1)
    (action,) = [a for a in diff(other, {r.id: r for r in rs}) if a.resource.kind == "frr"]
    assert action.op == "update"


def test_asn_and_evpn_options_are_validated():
    assert any(p.startswith("evpn.asn: 0 is too small") for p in problems(EVPN + "evpn: {asn: 0}\n"))
    assert any(p.startswith("evpn.asn: 4294967295 is too large") for p in problems(EVPN + "evpn: {asn: 4294967295}\n"))
    assert "evpn.asn: 23456 is reserved (AS_TRANS); use e.g. 65000 or 4200000000" in problems(EVPN + "evpn: {asn: 23456}\n")
    assert any(p.startswith("evpn.asn: must be a whole number") for p in problems(EVPN + "evpn: {asn: yes}\n"))
    assert any(p.startswith("evpn.peers: unknown key") for p in problems(EVPN + "evpn: {peers: []}\n"))
    assert "evpn: is set, but no network has overlay: {control: evpn}" in problems(LAB + "evpn: {asn: 65001}\n")
    assert load_text(EVPN).evpn is None and frrconf.asn(load_text(EVPN)) == 65000


def test_pathspace_and_files_are_per_state_directory():
    a, b = Path("/run/vnet/@x-h1/lab"), Path("/run/vnet/@x-h2/lab")
    assert frrconf.pathspace(a) != frrconf.pathspace(b) and frrconf.pathspace(a) == frrconf.pathspace(Path("/run/vnet/@x-h1/lab"))
    assert all(p == a / "frr" or a in p.parents for p in frrconf.files(a).values())
    assert frrconf.too_long(a) is None and frrconf.too_long(Path("/" + "d" * 100)) is not None


def test_an_ipv6_underlay_gets_a_stable_ipv4_router_id():
    rid = frrconf.router_id("2001:db8::11")
    assert rid == frrconf.router_id("2001:db8::11") != frrconf.router_id("2001:db8::12")
    assert frrconf.router_id("192.0.2.11") == "192.0.2.11"


def test_the_ruleset_takes_bgp_from_the_other_hosts_only():
    text = by(desired(load_text(EVPN), H2), "ruleset")["vnet-lab"].get("text")
    assert "tcp dport 179 meta nfproto ipv4 ip saddr != @bgp_peers drop" in text
    assert "elements = { 192.0.2.11, 198.51.100.77 }" in text
    assert "bgp_peers" not in by(desired(load_text(LAB), H2), "ruleset")["vnet-lab"].get("text")


RR = EVPN + "evpn: {route_reflectors: [h1]}\n"


@pytest.mark.parametrize("host", ["h1", "h3"])
def test_golden_route_reflector_frr_conf(host):
    """With h1 as route reflector: h1 peers with h2 and h3 as its clients, h3 only with h1
    (VNET_UPDATE_GOLDEN=1 rewrites the files)."""
    from tests.unit import test_overlay

    text = frr_config(RR, getattr(test_overlay, host.upper()))
    path = GOLDEN / f"evpn-rr-{host}.frr.conf"
    if os.environ.get("VNET_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_route_reflector_sessions():
    h1, h3 = frr_config(RR, H1), frr_config(RR, H3)
    for peer in ("198.51.100.12", "198.51.100.77"):
        assert f"  neighbor {peer} route-reflector-client" in h1 and f" neighbor {peer} remote-as 65000" in h1
    assert " neighbor 192.0.2.11 remote-as" in h3 and "198.51.100.12" not in h3 and "route-reflector-client" not in h3
    # two reflectors peer with each other as equals, and reflect for the rest
    two = frr_config(EVPN + "evpn: {route_reflectors: [h1, h2]}\n", H1)
    assert "  neighbor 198.51.100.12 activate" in two and "neighbor 198.51.100.12 route-reflector-client" not in two
    assert "  neighbor 198.51.100.77 route-reflector-client" in two
    # the firewall takes BGP only from the sessions' peers
    from vnet import overlay

    assert overlay.bgp_peers(load_text(RR), H3) == (("192.0.2.11", False),)


def test_route_reflectors_must_be_hosts():
    assert problems(EVPN + "evpn: {route_reflectors: [h1, h9]}\n") == ["evpn.route_reflectors[1]: no host named 'h9' (known: h1, h2, h3)"]
    assert problems(EVPN + "evpn: {route_reflectors: [h1, h1]}\n") == ["evpn.route_reflectors[1]: h1 is named twice"]
