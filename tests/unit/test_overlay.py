"""A topology over several hosts: spec, this host's part of desired state, the vxlan resource, and
a golden file of everything one host renders."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest

from vnet import names, overlay
from vnet.desired import desired
from vnet.drivers import rtnl
from vnet.errors import SpecError
from vnet.facts import HostFacts
from vnet.spec import load_text
from vnet.spec.validate import addressing, dhcp_range

GOLDEN = Path(__file__).parent / "golden"

LAB = """
name: lab
hosts:
  h1: 192.0.2.11
  h2: 198.51.100.12
  h3: 198.51.100.77
networks:
  lan:
    mode: nat
    subnet: 10.90.0.0/24
    dhcp: true
    dns: {domain: lab.test}
    overlay: {vni: 4242}
endpoints:
  a: {kind: netns, network: lan, address: 10.90.0.10/24, host: h1}
  b: {kind: netns, network: lan, address: 10.90.0.11/24, host: h3}
vms:
  web: {image: tiny, host: h2, nics: [{network: lan}]}
"""


def facts(host: str, address: str, mtu: int = 1500) -> HostFacts:
    return HostFacts(default_uplink="eth0", resolvers=("192.0.2.1",), host=host, underlay=address, underlay_mtu=mtu,
                     tiny_guest=("/k", "/i"))


H1 = facts("h1", "192.0.2.11")
H2 = facts("h2", "198.51.100.12")
H3 = facts("h3", "198.51.100.77")


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_text(text)
    return [f"{p.path}: {p.message}" for p in exc.value.problems]


def by(rs, kind):
    return {r.key: r for r in rs if r.kind == kind}


# --- spec -----------------------------------------------------------------------------------------


def test_the_example_loads():
    topo = load_text(LAB)
    assert topo.hosts == {"h1": "192.0.2.11", "h2": "198.51.100.12", "h3": "198.51.100.77"}
    assert topo.networks["lan"].overlay.port == 4789 and topo.networks["lan"].overlay.control == "static"


def test_hosts_require_host_on_every_endpoint_and_vm():
    text = LAB.replace(", host: h3}", "}").replace("host: h2, ", "")
    found = problems(text)
    assert "endpoints.b.host: is required when the topology declares hosts:" in found
    assert "vms.web.host: is required when the topology declares hosts:" in found


def test_unknown_hosts_and_host_without_hosts_are_refused():
    assert any(p.startswith("endpoints.a.host: no host named 'h9'") for p in problems(LAB.replace("host: h1", "host: h9")))
    plain = "name: x\nnetworks: {n: {mode: isolated}}\nendpoints: {a: {kind: netns, network: n, host: h1}}\n"
    assert any(p.startswith("endpoints.a.host: names a host") for p in problems(plain))


def test_overlay_rules():
    assert any(p.startswith("networks.lan.overlay: needs the hosts") for p in problems(
        "name: x\nnetworks: {lan: {mode: isolated, overlay: {vni: 5}}}\n"))
    two = LAB.replace("endpoints:", "  other:\n    mode: isolated\n    overlay: {vni: 4242}\nendpoints:")
    assert "networks.other.overlay.vni: 4242 is also the VNI of networks.lan" in problems(two)
    assert any(p.startswith("hosts.h3: 192.0.2.11 is also") for p in problems(LAB.replace("198.51.100.77", "192.0.2.11")))
    assert any(p.startswith("networks.lan.dhcp.host: no host named 'h7'") for p in problems(LAB.replace("dhcp: true", "dhcp: {host: h7}")))
    assert any(p.startswith("networks.lan.overlay.vni") for p in problems(LAB.replace("vni: 4242", "vni: 16777216")))
    assert load_text(LAB.replace("vni: 4242", "vni: 4242, control: evpn")).networks["lan"].overlay.control == "evpn"


def test_dhcp_and_dns_answer_from_an_address_of_their_own():
    topo = load_text(LAB)
    addr = addressing(topo, "lan")
    assert (str(addr.gateway), str(addr.service)) == ("10.90.0.1", "10.90.0.2")
    assert tuple(map(str, dhcp_range(topo, "lan"))) == ("10.90.0.3", "10.90.0.254")
    last = load_text(LAB.replace("subnet: 10.90.0.0/24", "subnet: 10.90.0.0/24\n    address: 10.90.0.254"))
    assert str(addressing(last, "lan").service) == "10.90.0.253"
    assert tuple(map(str, dhcp_range(last, "lan"))) == ("10.90.0.1", "10.90.0.252")
    assert any(p.startswith("endpoints.a.address: 10.90.0.2 is the address of the network's DHCP/DNS service")
               for p in problems(LAB.replace("10.90.0.10/24", "10.90.0.2/24")))


# --- desired state ------------------------------------------------------------------------------


def test_each_host_builds_its_own_part():
    topo = load_text(LAB)
    h1, h2, h3 = desired(topo, H1), desired(topo, H2), desired(topo, H3)
    assert set(by(h1, "netns")) == {"lab-a", "lab-svc-lan"}
    assert set(by(h3, "netns")) == {"lab-b"}
    assert set(by(h2, "vm")) == {"web"} and not by(h1, "vm") and not by(h3, "vm")
    assert set(by(h1, "service")) == {"dnsmasq-lan"} and not by(h2, "service") and not by(h3, "service")
    # the same bridge (MAC, gateway address) on every host: the anycast gateway
    for rs in (h1, h2, h3):
        assert by(rs, "bridge")["vb-lab-lan"].get("mac") == names.local_mac("lab", "lan", "bridge")
        assert "@host/vb-lab-lan/10.90.0.1/24" in by(rs, "bridge_address")


def test_the_vxlan_device_and_its_flood_list():
    topo = load_text(LAB)
    vx = by(desired(topo, H3), "vxlan")["vx-lab-lan"]
    topo_macs = {"a": names.mac("lab", "a"), "svc": names.local_mac("lab", "lan", "svc")}
    from vnet import qemuargs

    web = qemuargs.nic_mac(topo, "web", 0)
    assert vx.a == {"mark": "vnet:lab:vxlan:lan", "vni": 4242, "port": 4789, "local": "198.51.100.77", "learning": False,
                    "master": "vb-lab-lan", "mtu": 1450, "peers": ("192.0.2.11", "198.51.100.12"),
                    # unicast goes straight to the host that holds the MAC: endpoints, VM NICs, the DHCP/DNS service
                    "macs": tuple(sorted((f"{topo_macs['a']}@192.0.2.11", f"{topo_macs['svc']}@192.0.2.11", f"{web}@198.51.100.12")))}
    assert f"{names.mac('lab', 'b')}@198.51.100.77" in by(desired(topo, H1), "vxlan")["vx-lab-lan"].get("macs")
    fewer = load_text(LAB.replace("  h2: 198.51.100.12\n", "").replace("host: h2, ", "host: h1, "))
    assert by(desired(fewer, H3), "vxlan")["vx-lab-lan"].get("peers") == ("192.0.2.11",)
    assert not by(desired(load_text(LAB.replace("overlay: {vni: 4242}", "mtu: 1400")), H1), "vxlan")


def test_mtu_is_the_underlays_minus_the_tunnel_on_every_port_and_in_dhcp():
    topo = load_text(LAB)
    rs = desired(topo, H1)
    assert by(rs, "bridge")["vb-lab-lan"].get("mtu") == 1450
    assert by(rs, "veth")[names.veth_host("lab", "a")].get("mtu") == 1450
    assert by(rs, "veth")[names.veth_host("lab", "svc-lan")].get("mtu") == 1450
    assert "dhcp-option-force=option:mtu,1450" in by(rs, "service")["dnsmasq-lan"].get("config")
    assert by(desired(topo, H2), "tap")[names.vm_tap("lab", "web", 0)].get("mtu") == 1450
    v6 = facts("h1", "2001:db8::11", mtu=9000)
    assert overlay.mtu(topo.networks["lan"], v6) == 9000 - 70
    set_mtu = load_text(LAB.replace("overlay: {vni: 4242}", "overlay: {vni: 4242}\n    mtu: 1400"))
    assert by(desired(set_mtu, H1), "bridge")["vb-lab-lan"].get("mtu") == 1400


def test_dnsmasq_serves_every_hosts_names_from_its_own_address():
    conf = by(desired(load_text(LAB), H1), "service")["dnsmasq-lan"].get("config")
    assert "host-record=a.lab.test,a,10.90.0.10" in conf and "host-record=b.lab.test,b,10.90.0.11" in conf
    assert "dhcp-option=option:dns-server,10.90.0.2" in conf and "dhcp-option=option:router,10.90.0.1" in conf
    assert "interface=eth0" in conf and "server=192.0.2.1" in conf
    assert any(line.startswith("dhcp-host=") and line.endswith(",web") for line in conf.splitlines())
    served = desired(load_text(LAB.replace("dhcp: true", "dhcp: {host: h3}")), H3)
    assert set(by(served, "service")) == {"dnsmasq-lan"}
    assert by(served, "route")["lab-svc-lan/default"].get("gateway") == "10.90.0.1"


def test_the_ruleset_admits_the_peers_only_and_keeps_the_gateway_mac_off_the_tunnel():
    text = by(desired(load_text(LAB), H2), "ruleset")["vnet-lab"].get("text")
    assert "4789 . 192.0.2.11, 4789 . 198.51.100.77" in text
    assert "udp dport @vxlan_ports meta nfproto ipv4 udp dport . ip saddr != @vxlan_peers drop" in text
    assert f'"vx-lab-lan" . {names.local_mac("lab", "lan", "bridge")}' in text
    assert "oifname . ether saddr @anycast drop" in text
    plain = desired(load_text("name: lab\nnetworks: {lan: {mode: nat, subnet: 10.90.0.0/24}}\n"), HostFacts(default_uplink="eth0"))
    assert "vxlan" not in by(plain, "ruleset")["vnet-lab"].get("text")


def test_a_topology_without_hosts_is_not_localized():
    topo = load_text("name: lab\nnetworks: {lan: {mode: nat, subnet: 10.90.0.0/24}}\n")
    assert overlay.localize(topo, HostFacts()) == (topo, HostFacts())


def test_netns_marks_carry_the_target_namespace():
    """Hosts sandboxed on one machine share /run/netns: a namespace is known as one host's by the
    id of the target it was made for (names.target_id)."""
    from vnet import names

    facts = H1.replace(target=names.target_id("lab-h1"))
    assert by(desired(load_text(LAB), facts), "netns")["lab-a"].get("mark") == f"vnet:lab:netns:a:{names.target_id('lab-h1')}"


def test_golden_h1():
    """Everything host h1 renders for the three-host example (VNET_UPDATE_GOLDEN=1 rewrites the file)."""
    rs = desired(load_text(LAB), H1)
    text = "\n".join(json.dumps({"kind": r.kind, "key": r.key, "attrs": r.a}, sort_keys=True, default=list) for r in rs) + "\n"
    for r in rs:
        for key in ("config", "text"):
            if r.get(key):
                text += f"\n# --- {r.kind} {r.key}: {key}\n{r.get(key)}"
    from vnet import snoop

    text = text.replace(snoop.interpreter(), "<python>")  # where this checkout's venv is
    path = GOLDEN / "overlay-h1.txt"
    if os.environ.get("VNET_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


# --- netlink encoding -----------------------------------------------------------------------------


def test_vxlan_data_round_trips():
    data = rtnl.vxlan_data(4242, "198.18.1.2", 4789)
    assert rtnl.parse_vxlan(memoryview(data)) == {"vni": 4242, "local": "198.18.1.2", "port": 4789, "learning": False}
    v6 = rtnl.vxlan_data(7, "2001:db8::1", 8472, learning=True)
    assert rtnl.parse_vxlan(memoryview(v6)) == {"vni": 7, "local": "2001:db8::1", "port": 8472, "learning": True}


def test_vxlan_over_ipv4_sends_no_outer_udp_checksum():
    def csum(data: bytes) -> bytes | None:
        return next((bytes(v) for kind, v in rtnl.attrs(memoryview(data), 0, len(data)) if kind == rtnl.IFLA_VXLAN_UDP_CSUM), None)

    assert csum(rtnl.vxlan_data(4242, "198.18.1.2", 4789)) == b"\0"  # RFC 7348: zero over IPv4
    assert csum(rtnl.vxlan_data(7, "2001:db8::1", 8472)) is None  # the kernel's default over IPv6


def test_fdb_requests_append_all_zero_entries():
    mtype, flags, body = rtnl.fdb_append(5, "198.18.2.2")
    assert mtype == rtnl.RTM_NEWNEIGH and flags & rtnl.F_APPEND and flags & rtnl.F_CREATE
    family, index, state, ntf, _ = rtnl._NDMSG.unpack_from(body)
    assert (family, index, ntf) == (rtnl.AF_BRIDGE, 5, rtnl.NTF_SELF) and state & rtnl.NUD_PERMANENT
    fake = b"\0" * 16 + body  # a message header, then the body as the kernel would dump it
    e = rtnl.parse_fdb(memoryview(fake))
    assert (e.index, e.mac, e.dst) == (5, "00:00:00:00:00:00", "198.18.2.2")


def test_an_overlay_mtu_that_fits_no_underlay_is_refused():
    assert any(p.startswith("networks.lan.mtu: 65500 cannot fit in any underlay")
               for p in problems(LAB.replace("overlay: {vni: 4242}", "overlay: {vni: 4242}\n    mtu: 65500")))


def test_a_host_without_the_networks_dnsmasq_binds_leases_from_acks_through_the_tunnel():
    def learn_rules(facts):
        text = by(desired(load_text(LAB), facts), "ruleset")["vnet-lab"].get("text")
        return [line.strip() for line in text.splitlines() if "update @leased" in line]

    # h1 runs dnsmasq: its lease script keeps the leases; h2 learns them for the whole lease (1h)
    # plus the grace, from ACKs that arrive on the vxlan port only
    assert learn_rules(H1) == []
    (rule,) = learn_rules(H2)
    assert rule.startswith(f'iifname "{names.vxlan("lab", "lan")}" ') and "timeout 3660s" in rule
    infinite = load_text(LAB.replace("dhcp: true", "dhcp: {lease: infinite}"))
    text = by(desired(infinite, H2), "ruleset")["vnet-lab"].get("text")
    assert "update @leased { @ih,224,48 . @ih,128,32 }" in text
