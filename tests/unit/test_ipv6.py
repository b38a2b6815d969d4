"""IPv6 (dual stack): spec validation, desired state, the nftables inet part, dnsmasq lines."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from vnet import dnsconf, nftrules
from vnet.desired import desired
from vnet.errors import SpecError
from vnet.facts import HostFacts
from vnet.kinds.sysctl import ipv6_paths
from vnet.spec import load_text
from vnet.spec.validate import addressing6, dhcp6_range

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FACTS = HostFacts(default_uplink="eth0")


def doc(net: dict | None = None, endpoints: dict | None = None, **more) -> dict:
    base = {"mode": "nat", "subnet": "192.168.224.0/24", "subnet6": "2001:db8:77::/64"}
    return {"name": "ds", "networks": {"lan0": {**base, **(net or {})}, **more.pop("networks", {})},
            "endpoints": endpoints or {}, **more}


def load(data: dict):
    return load_text(yaml.safe_dump(data, sort_keys=False))


def problems(data: dict):
    with pytest.raises(SpecError) as info:
        load(data)
    return info.value.problems


def paths(data: dict) -> list[str]:
    return [p.path for p in problems(data)]


A6 = {"kind": "netns", "network": "lan0", "address": "192.168.224.10/24", "address6": "2001:db8:77::10/64"}


# --- validation ---------------------------------------------------------------------------------


def test_dualstack_example_is_valid():
    t = load_text((EXAMPLES / "dualstack.yaml").read_text())
    assert t.networks["lan0"].subnet6 == "2001:db8:77::/64"


def test_gateway_takes_the_first_address_unless_address6_says():
    assert str(addressing6(load(doc()), "lan0").gateway) == "2001:db8:77::1"
    assert str(addressing6(load(doc({"address6": "2001:db8:77::fe"})), "lan0").gateway) == "2001:db8:77::fe"


@pytest.mark.parametrize(
    "net, path, words",
    [
        ({"subnet6": "2001:db8:77::1/64"}, "networks.lan0.subnet6", "IPv6 network"),  # host bits set
        ({"subnet6": "192.168.1.0/24"}, "networks.lan0.subnet6", "IPv6 network"),
        ({"subnet6": "fe80::/64"}, "networks.lan0.subnet6", "link-local"),
        ({"subnet6": "2001:db8:77::/56"}, "networks.lan0.subnet6", "SLAAC"),
        ({"address6": "2001:db8:78::1"}, "networks.lan0.address6", "not a host address"),
        ({"address6": "10.0.0.1"}, "networks.lan0.address6", "IPv6 address"),
        ({"dhcp6": ["2001:db8:77::200", "2001:db8:77::100"]}, "networks.lan0.dhcp6", "comes after"),
        ({"dhcp6": ["2001:db8:77::1", "2001:db8:77::100"]}, "networks.lan0.dhcp6", "own address"),
        ({"dhcp6": ["2001:db8:78::1", "2001:db8:78::100"]}, "networks.lan0.dhcp6.0", "not a host address"),
        ({"dhcp6": None}, "networks.lan0.dhcp6", "true, false or a range"),
        ({"mode": "host", "nat6": False}, "networks.lan0.nat6", "no meaning in host mode"),
        ({"mode": "isolated", "address6": "2001:db8:77::1"}, "networks.lan0.address6", "no address in isolated"),
        ({"mode": "bridged", "subnet": None, "uplink": "eth0"}, "networks.lan0.subnet6", "from its LAN"),
        ({"subnet": None, "mode": "isolated"}, "networks.lan0.subnet6", "IPv6-only"),
        ({"subnet6": None, "address6": "2001:db8:77::1"}, "networks.lan0.address6", "needs subnet6"),
        ({"subnet6": None, "dhcp6": True}, "networks.lan0.dhcp6", "needs subnet6"),
        ({"subnet6": None, "nat6": False}, "networks.lan0.nat6", "needs subnet6"),
    ],
)
def test_network_problems(net, path, words):
    net = {k: v for k, v in net.items()}
    data = doc(net)
    for k in [k for k, v in data["networks"]["lan0"].items() if v is None and k != "dhcp6"]:
        del data["networks"]["lan0"][k]
    ps = problems(data)
    assert path in [p.path for p in ps]
    msg = next(p for p in ps if p.path == path)
    assert words in msg.message, msg
    assert "\n" not in msg.message


def test_a_dhcpv6_network_may_be_larger_than_a_64():
    t = load(doc({"subnet6": "2001:db8:77::/56", "dhcp6": True}))
    assert dhcp6_range(t, "lan0") == (ipaddress.IPv6Address("2001:db8:77::100"), ipaddress.IPv6Address("2001:db8:77::ffff"))


def test_subnet6_overlap():
    data = doc(networks={"lan1": {"mode": "host", "subnet": "192.168.225.0/24", "subnet6": "2001:db8:77::/64"}})
    assert "networks.lan1.subnet6" in paths(data)


@pytest.mark.parametrize(
    "address6, words",
    [
        ("2001:db8:78::10/64", "not inside"),
        ("2001:db8:77::10/96", "not inside"),
        ("2001:db8:77::1/64", "own address"),
        ("2001:db8:77::/64", "anycast"),
        ("2001:db8:77::10", "prefix length"),
    ],
)
def test_endpoint_address6_problems(address6, words):
    ps = problems(doc(endpoints={"a": {**A6, "address6": address6}}))
    assert [p.path for p in ps] == ["endpoints.a.address6"]
    assert words in ps[0].message


def test_endpoint_address6_twice_and_inside_the_dhcp6_range():
    data = doc({"dhcp6": True}, endpoints={"a": A6, "b": {**A6, "address": "192.168.224.11/24", "address6": "2001:db8:77::10/64"},
                                        "c": {**A6, "address": "192.168.224.12/24", "address6": "2001:db8:77::200/64"}})
    ps = problems(data)
    assert {p.path for p in ps} == {"endpoints.b.address6", "endpoints.c.address6"}
    assert any("DHCPv6 range" in p.message for p in ps)


def test_endpoint_address6_on_a_network_without_subnet6():
    data = doc({"subnet6": None}, endpoints={"a": A6})
    del data["networks"]["lan0"]["subnet6"]
    assert paths(data) == ["endpoints.a.address6"]


# --- desired state ------------------------------------------------------------------------------


def test_addresses_routes_and_switches():
    t = load(doc(endpoints={"a": A6}))
    rs = {(r.kind, r.key): r for r in desired(t, FACTS)}
    assert ("bridge_address", "@host/vb-ds-lan0/2001:db8:77::1/64") in rs
    assert ("address", "ds-a/eth0/2001:db8:77::10/64") in rs
    route = rs[("route", "ds-a/::/0")]
    assert route.get("gateway") == "2001:db8:77::1" and route.get("dst") == "::/0"
    # never the host-wide switch, never `forwarding` (it would purge the uplink's RA routes)
    assert ipv6_paths(t, FACTS) == [
        ("net/ipv6/conf/vb-ds-lan0/force_forwarding", "1"),
        ("net/ipv6/conf/eth0/force_forwarding", "1"),
        ("net/ipv6/conf/vb-ds-lan0/accept_ra", "0"),
    ]


def test_host_mode_forwards_nothing():
    t = load(doc({"mode": "host"}))
    assert ipv6_paths(t, FACTS) == [("net/ipv6/conf/vb-ds-lan0/accept_ra", "0")]


def test_an_ipv4_topology_renders_unchanged_switches():
    t = load(doc({"subnet6": None}))
    del t  # (subnet6: None loads as no IPv6)
    data = doc()
    del data["networks"]["lan0"]["subnet6"]
    assert ipv6_paths(load(data), FACTS) == []


# --- nftables, the inet part -------------------------------------------------------------------


def test_nat66_hairpin_and_forwards6():
    t = load(doc({"forwards": [{"port": 8080, "to": "a:80"}, {"port": 9090, "to": "192.168.224.20"}]}, endpoints={"a": A6}))
    text = nftrules.render(t, FACTS).text
    assert '2001:db8:77::/64 . "eth0"' in text  # masq6
    assert '2001:db8:77::/64 . "vb-ds-lan0"' in text  # hairpin6
    assert "tcp . 8080 : 2001:db8:77::10 . 80" in text  # a has an IPv6 address: forwarded on both
    assert "9090 : 2001" not in text  # an IPv4 literal target: IPv4 only
    assert "ip6 saddr . oifname @masq6 masquerade" in text


def test_nat6_false_routes_instead():
    text = nftrules.render(load(doc({"nat6": False})), FACTS).text
    masq6 = text.split("set masq6 {")[1].split("}")[0]
    assert "elements" not in masq6
    assert '2001:db8:77::/64 . "vb-ds-lan0"' in text  # the hairpin stays


def test_rule_count_does_not_grow_with_ipv6_forwards():
    def rules(n: int) -> int:
        eps = {f"e{i}": {**A6, "address": f"192.168.224.{10 + i}/24", "address6": f"2001:db8:77::{10 + i:x}/64"} for i in range(n)}
        fwds = [{"port": 8000 + i, "to": f"e{i}:80"} for i in range(n)]
        return nftrules.render(load(doc({"forwards": fwds}, endpoints=eps)), FACTS).rules

    assert rules(1) == rules(20)


# --- dnsmasq -----------------------------------------------------------------------------------


def conf(data: dict, net: str = "lan0") -> str:
    t = load(data)
    return dnsconf.render(t, net, "vb-ds-lan0", "", ["192.0.2.1"], Path("/tmp/x"))


def test_slaac_router_advertisements_and_aaaa_for_every_name():
    text = conf(doc({"dns": {"domain": "d.test"}}, endpoints={"a": A6, "c": {"kind": "netns", "network": "lan0"}},
                    vms={"web": {"image": "tiny", "nics": [{"network": "lan0"}]}}))
    lines = text.splitlines()
    assert "enable-ra" in lines
    assert "dhcp-range=::,constructor:vb-ds-lan0,ra-stateless,ra-names,64,1h" in lines
    assert "host-record=gateway.d.test,gateway,2001:db8:77::1" in lines
    assert "host-record=a.d.test,a,2001:db8:77::10" in lines
    # SLAAC addresses follow from the MACs (EUI-64)
    assert any(x.startswith("host-record=c.d.test,c,2001:db8:77:0:5054:ff:fe") for x in lines)
    assert any(x.startswith("host-record=web.d.test,web,2001:db8:77:0:5054:ff:fe") for x in lines)
    assert any(x.startswith("dhcp-leasefile=") for x in lines)


def test_eui64():
    assert str(dnsconf.eui64(ipaddress.IPv6Network("2001:db8::/64"), "52:54:00:12:34:56")) == "2001:db8::5054:ff:fe12:3456"


def test_dhcpv6_range():
    text = conf(doc({"dhcp6": ["2001:db8:77::100", "2001:db8:77::1ff"]}))
    assert "dhcp-range=2001:db8:77::100,2001:db8:77::1ff,64,1h" in text.splitlines()


def test_isolated_advertises_no_default_route():
    data = doc({"mode": "isolated", "subnet": "10.77.0.0/24"})
    t = load(data)
    assert str(addressing6(t, "lan0").service) == "2001:db8:77::1"
    text = dnsconf.render(t, "lan0", "eth0", "ds-svc-lan0", [], Path("/tmp/x"))
    assert "ra-param=eth0,60,0" in text.splitlines()
    # the service runs for router advertisements alone, in its namespace with both addresses
    rs = {(r.kind, r.key) for r in desired(t, FACTS)}
    assert any(k == "service" for k, _ in rs)
    assert any(k == "address" and "2001:db8:77::1/64" in key for k, key in rs)


def test_no_ipv6_lines_without_subnet6():
    data = doc({"dns": True})
    del data["networks"]["lan0"]["subnet6"]
    assert "enable-ra" not in conf(data)


# --- rtnetlink: IPv6 requests decode back to what was asked ------------------------------------


def test_rtnl_ipv6_address_and_route_round_trip():
    from vnet.drivers import rtnl

    _, _, body = rtnl.add_addr(7, "2001:db8:5::7", 64, proto=86, flags=rtnl.IFA_F_NODAD | 0x100, lifetimes=(300, 600))
    a = rtnl.parse_addr(memoryview(b"\0" * 16 + body))
    assert (a.family, a.index, a.prefixlen, a.local, a.proto) == (rtnl.AF_INET6, 7, 64, "2001:db8:5::7", 86)
    assert a.address is None  # IPv6 takes IFA_LOCAL alone
    assert a.flags == 0x102 and (a.preferred, a.valid) == (300, 600)

    _, _, body = rtnl.add_route("::", 0, oif=3, gateway="fe80::1", proto=9, pref=1, expires=500)
    r = rtnl.parse_route(memoryview(b"\0" * 16 + body))
    assert (r.family, r.dst, r.dst_len, r.gateway, r.oif, r.proto, r.pref) == (rtnl.AF_INET6, None, 0, "fe80::1", 3, 9, 1)

    _, _, body = rtnl.add_route("10.0.0.0", 8, gateway="192.0.2.1")
    r = rtnl.parse_route(memoryview(b"\0" * 16 + body))
    assert (r.family, r.dst, r.gateway) == (rtnl.AF_INET, "10.0.0.0", "192.0.2.1")


def test_v6text_writes_every_address_as_ipaddress_does():
    """The ruleset writes IPv6 addresses through the C library where it agrees with ipaddress;
    the cases where it would not (::/80, e.g. IPv4-mapped or -compatible) go to ipaddress."""
    import random

    from vnet.nftrules import v6text

    rng = random.Random(6)
    cases = ["::", "::1", "::ffff:1.2.3.4", "::1.2.3.4", "::ffff:0:0", "fe80::", "fe80::1", "fe80::200:ff:fe00:1",
             "2001:db8::", "2001:db8:0:1::", "2001:0:0:1::1", "1:0:0:2:0:0:0:3", "0:0:1::", "0:0:0:0:0:1:0:0"]
    for _ in range(2000):
        groups = [rng.choice((0, 0, 0, rng.randrange(1 << 16))) for _ in range(8)]
        cases.append(":".join(f"{g:x}" for g in groups))
    for text in cases:
        a = ipaddress.IPv6Address(text)
        assert v6text(a) == str(a), text
