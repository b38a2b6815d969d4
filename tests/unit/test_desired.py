"""Topology → desired resources (`vnet.desired.desired`) and the nftables ruleset it carries."""

from __future__ import annotations

import pwd
import re

import pytest
import yaml

from vnet import names
from vnet.desired import desired
from vnet.facts import HostFacts
from vnet.resources import Resource
from vnet.spec import load_text
from vnet.spec.models import Topology

ETH0 = HostFacts(default_uplink="eth0")
BR = names.bridge("lab", "lan0")

# --- helpers ------------------------------------------------------------------------------------


def topology(networks: dict | None = None, endpoints: dict | None = None, name: str = "lab") -> Topology:
    data: dict = {"name": name}
    if networks:
        data["networks"] = networks
    if endpoints:
        data["endpoints"] = endpoints
    return load_text(yaml.safe_dump(data))


def resources(networks=None, endpoints=None, facts: HostFacts = ETH0, name: str = "lab") -> list[Resource]:
    return desired(topology(networks, endpoints, name), facts)


def of_kind(rs: list[Resource], kind: str) -> list[Resource]:
    return [r for r in rs if r.kind == kind]


def by_id(rs: list[Resource]) -> dict[str, Resource]:
    ids = [r.id for r in rs]
    assert len(ids) == len(set(ids)), f"duplicate resource ids: {ids}"
    return {r.id: r for r in rs}


def one(rs: list[Resource], kind: str) -> Resource:
    found = of_kind(rs, kind)
    assert len(found) == 1, f"expected one {kind}, got {found}"
    return found[0]


def ruleset_text(rs: list[Resource]) -> str:
    return one(rs, "ruleset").get("text")


def table(text: str, family: str = "inet") -> str:
    """The body of the `inet` or `bridge` table of a rendered ruleset; "" if absent."""
    m = re.search(rf"^table {family} \S+ {{\n(.*?)^}}", text, re.S | re.M)
    return m.group(1) if m else ""


def chain(text: str, name: str, family: str = "inet") -> list[str]:
    """The rules (not the `type` line) of one chain of a table of a rendered ruleset; [] if absent."""
    m = re.search(rf"^  chain {name} {{\n(.*?)^  }}", table(text, family), re.S | re.M)
    if not m:
        return []
    return [line.strip() for line in m.group(1).splitlines() if not line.strip().startswith("type ")]


def all_rules(text: str) -> list[str]:
    """Every rule line of every chain of both tables."""
    return [
        line.strip()
        for body in re.findall(r"^  chain \S+ {\n(.*?)^  }", text, re.S | re.M)
        for line in body.splitlines()
        if not line.strip().startswith("type ")
    ]


def elements(text: str, name: str, family: str = "inet") -> list[str]:
    """The elements of a named set or map, as written; [] if it has none. Fails if it is absent."""
    m = re.search(rf"^  (?:set|map) {name} {{\n(.*?)^  }}", table(text, family), re.S | re.M)
    assert m, f"no set or map {name!r} in the {family} table"
    found = re.search(r"^    elements = { (.*) }$", m.group(1), re.M)
    return found.group(1).split(", ") if found else []


NAT = {"lan0": {"mode": "nat", "subnet": "10.30.0.0/24"}}
ISOLATED = {"lan0": {"mode": "isolated", "subnet": "10.10.0.0/24"}}
HOSTNET = {"lan0": {"mode": "host", "subnet": "10.20.0.0/24"}}
BRIDGED = {"lan0": {"mode": "bridged", "uplink": "enp3s0"}}


# --- nat ----------------------------------------------------------------------------------------


def test_nat_bridge():
    br = one(resources(NAT), "bridge")
    assert br.key == BR
    assert br.get("mark") == "vnet:lab:bridge:lan0:nat"
    assert names.parse_mark(br.get("mark")) == ("lab", "bridge", "lan0", ("nat",))
    assert br.get("mac") == names.local_mac("lab", "lan0", "bridge")


def test_nat_gateway_is_first_host_by_default():
    addr = one(resources(NAT), "bridge_address")
    assert (addr.get("ns"), addr.get("ifname"), addr.get("address"), addr.get("prefixlen")) == ("", BR, "10.30.0.1", 24)
    assert addr.key == f"@host/{BR}/10.30.0.1/24"


def test_nat_gateway_from_address():
    rs = resources({"lan0": {"mode": "nat", "subnet": "10.30.0.0/16", "address": "10.30.255.254"}})
    addr = one(rs, "bridge_address")
    assert (addr.get("address"), addr.get("prefixlen")) == ("10.30.255.254", 16)


def test_nat_forwarding_only_on_bridge_and_uplink():
    sysctls = of_kind(resources(NAT), "sysctl")
    assert sorted(r.get("path") for r in sysctls) == sorted(
        [f"net/ipv4/conf/{BR}/forwarding", "net/ipv4/conf/eth0/forwarding"]
    )
    assert all(r.get("value") == "1" and r.get("ns") == "" for r in sysctls)
    assert all(r.key == f"@host/{r.get('path')}" for r in sysctls)
    assert not any("ip_forward" in r.key or "conf/all" in r.key for r in sysctls)


def test_nat_explicit_uplink_beats_default_route():
    rs = resources({"lan0": {**NAT["lan0"], "uplink": "wlan0"}}, facts=ETH0)
    paths = {r.get("path") for r in of_kind(rs, "sysctl")}
    assert "net/ipv4/conf/wlan0/forwarding" in paths
    assert "net/ipv4/conf/eth0/forwarding" not in paths
    text = ruleset_text(rs)
    assert elements(text, "masq") == ['10.30.0.0/24 . "wlan0"']
    assert elements(text, "egress") == [f'"{BR}" . "wlan0"']
    assert '"eth0"' not in text


def test_nat_masquerade_for_subnet_on_uplink():
    text = ruleset_text(resources(NAT))
    # the subnet is masqueraded only where it leaves through the uplink
    assert "ip saddr . oifname @masq masquerade" in chain(text, "postrouting")
    assert elements(text, "masq") == ['10.30.0.0/24 . "eth0"']
    assert elements(text, "bridges") == [f'"{BR}"']
    # new connections go out bridge → uplink; replies come back to the bridge
    assert elements(text, "egress") == [f'"{BR}" . "eth0"']
    forward = chain(text, "forward")
    egress = "iifname . oifname @egress accept"
    back = "ct state established,related accept"
    assert egress in forward and forward[0] == back  # replies first: one conntrack test per packet
    # the accepts come before the catch-all drops of the bridges
    assert forward.index(egress) < forward.index("iifname @bridges drop")
    assert forward.index(back) < forward.index("oifname @bridges drop")


def test_nat_ruleset_is_in_its_own_table():
    rs = resources(NAT)
    rules = one(rs, "ruleset")
    assert rules.key == "vnet-lab"
    text = rules.get("text")
    assert text.startswith("table inet vnet-lab {")
    assert f'comment "{names.digest_mark("lab", rules.get("digest"))}"' in text
    # only accept policies: vnet never decides for traffic that is not its own
    assert re.findall(r"policy (\w+);", text) and set(re.findall(r"policy (\w+);", text)) == {"accept"}


def test_rule_count_matches_rendered_rules():
    for nets in (NAT, ISOLATED, HOSTNET, {**NAT, "lan1": {"mode": "isolated"}}):
        rs = resources(nets)
        text = ruleset_text(rs)
        count = len(all_rules(text))
        assert one(rs, "ruleset").get("rules") == count > 0
        # every chain of both tables is counted: the base chains and the bridge table's guard chains
        assert count == sum(len(chain(text, c)) for c in ("forward", "input", "prerouting", "output", "postrouting")) + sum(
            len(chain(text, c, "bridge"))
            for c in ("prerouting", "forward", "output", "guard_fixed", "guard_dhcp", "guard_free", "guard_arp", "guard_ip_fixed", "guard_ip_dhcp",
                      "guard_ip_free", "guard_ip6")
        )


# --- isolated / host / bridged ------------------------------------------------------------------


def test_isolated_has_no_bridge_address_no_forwarding_no_masquerade():
    rs = resources(ISOLATED)
    assert of_kind(rs, "address") == of_kind(rs, "bridge_address") == []
    assert of_kind(rs, "sysctl") == []
    assert one(rs, "bridge").get("mark") == "vnet:lab:bridge:lan0:isolated"
    text = ruleset_text(rs)
    assert elements(text, "isolated_bridges") == [f'"{BR}"']
    # nothing is masqueraded, routed out or forwarded into it
    for name in ("masq", "hairpin", "egress", "forwards", "allowed", "allowed_any"):
        assert elements(text, name) == [], name


def test_isolated_drops_input_from_bridge():
    text = ruleset_text(resources(ISOLATED))
    assert chain(text, "input") == ["iifname @isolated_bridges drop"]
    assert elements(text, "isolated_bridges") == [f'"{BR}"']
    assert elements(text, "bridges") == [f'"{BR}"']
    forward = chain(text, "forward")
    assert "iifname @bridges drop" in forward and "oifname @bridges drop" in forward


def test_host_mode_has_address_but_no_forwarding():
    rs = resources(HOSTNET)
    assert one(rs, "bridge_address").get("address") == "10.20.0.1"
    assert of_kind(rs, "sysctl") == []
    text = ruleset_text(rs)
    assert elements(text, "masq") == [] and elements(text, "egress") == []
    assert elements(text, "isolated_bridges") == []  # the host answers on its own network
    assert elements(text, "bridges") == [f'"{BR}"']
    assert "iifname @bridges drop" in chain(text, "forward")


def test_bridged_has_uplink_port_and_no_address_nor_masquerade():
    rs = resources(BRIDGED, {"vm": {"kind": "tap", "network": "lan0"}})
    up = one(rs, "uplink")
    assert up.key == "enp3s0" and up.get("bridge") == BR
    assert of_kind(rs, "address") == of_kind(rs, "bridge_address") == []
    assert of_kind(rs, "sysctl") == []
    assert one(rs, "bridge").get("mac") is None  # takes the uplink's MAC
    assert one(rs, "tap").get("master") == BR
    # the bridge is not routed by the host: no bridge, uplink or masquerade in the inet table,
    # only the tap's anti-spoofing in the bridge table
    text = ruleset_text(rs)
    for name in ("bridges", "isolated_bridges", "intra", "egress", "masq", "hairpin"):
        assert elements(text, name) == [], name
    assert BR not in table(text, "inet") and "enp3s0" not in text
    assert elements(text, "guarded", "bridge") == [f'"{names.tap("lab", "vm")}"']
    # without port policies a bridged-only topology needs no rules at all
    bare = resources(BRIDGED, {"vm": {"kind": "tap", "network": "lan0", "spoofing": "allow"}})
    assert of_kind(bare, "ruleset") == []


def test_bridged_network_gets_no_rules_next_to_a_nat_network():
    rs = resources({**NAT, "lan1": {"mode": "bridged", "uplink": "enp3s0"}})
    br1 = names.bridge("lab", "lan1")
    assert br1 not in ruleset_text(rs)
    assert BR in ruleset_text(rs)


def test_no_networks_no_ruleset():
    assert resources(endpoints={"vm": {"kind": "tap"}}) and of_kind(resources(endpoints={"vm": {"kind": "tap"}}), "ruleset") == []


def test_mtu_on_bridge_and_ports():
    rs = resources(
        {"lan0": {**NAT["lan0"], "mtu": 9000}},
        {"vm": {"kind": "tap", "network": "lan0"}, "c1": {"kind": "netns", "network": "lan0"}},
    )
    assert [r.get("mtu") for r in rs if r.kind in ("bridge", "tap", "veth")] == [9000, 9000, 9000]


def test_explicit_bridge_name_used_everywhere():
    rs = resources({"lan0": {**NAT["lan0"], "bridge": "br-lab"}}, {"vm": {"kind": "tap", "network": "lan0"}})
    assert one(rs, "bridge").key == "br-lab"
    assert one(rs, "bridge_address").get("ifname") == "br-lab"
    assert one(rs, "tap").get("master") == "br-lab"
    assert "net/ipv4/conf/br-lab/forwarding" in {r.get("path") for r in of_kind(rs, "sysctl")}
    assert BR not in ruleset_text(rs) and '"br-lab"' in ruleset_text(rs)


# --- netns endpoints ----------------------------------------------------------------------------


@pytest.mark.parametrize("nets, gateway", [(NAT, "10.30.0.1"), (HOSTNET, "10.20.0.1")])
def test_netns_endpoint_with_address_and_gateway(nets, gateway):
    subnet_prefix = nets["lan0"]["subnet"].rsplit(".", 2)[0]
    address = f"{subnet_prefix}.0.5/24"
    rs = resources(nets, {"c1": {"kind": "netns", "network": "lan0", "address": address}})
    ns = one(rs, "netns")
    assert ns.key == "lab-c1" and ns.get("mark") == "vnet:lab:netns:c1"
    veth = one(rs, "veth")
    assert veth.key == names.veth_host("lab", "c1")
    assert veth.get("master") == BR
    assert (veth.get("peer_ns"), veth.get("peer_name")) == ("lab-c1", "eth0")
    assert veth.get("peer_mac") == names.mac("lab", "c1")
    assert names.parse_mark(veth.get("mark")) == ("lab", "veth", "c1", ("lab-c1",))
    inner = [r for r in of_kind(rs, "address") if r.get("ns") == "lab-c1"]
    assert len(inner) == 1
    assert (inner[0].get("ifname"), inner[0].get("address"), inner[0].get("prefixlen")) == ("eth0", address.split("/")[0], 24)
    route = one(rs, "route")
    assert route.key == "lab-c1/default"
    assert (route.get("ns"), route.get("dst"), route.get("gateway"), route.get("ifname")) == ("lab-c1", "default", gateway, "eth0")


def test_netns_endpoint_route_via_explicit_gateway():
    rs = resources(
        {"lan0": {"mode": "nat", "subnet": "10.30.0.0/24", "address": "10.30.0.254"}},
        {"c1": {"kind": "netns", "network": "lan0", "address": "10.30.0.1/24"}},
    )
    assert one(rs, "route").get("gateway") == "10.30.0.254"


@pytest.mark.parametrize("nets", [ISOLATED, {"lan0": {"mode": "bridged", "uplink": "enp3s0"}}])
def test_netns_endpoint_without_gateway_gets_no_route(nets):
    address = "10.10.0.5/24" if nets is ISOLATED else "192.168.1.5/24"
    rs = resources(nets, {"c1": {"kind": "netns", "network": "lan0", "address": address}})
    assert [r.get("address") for r in of_kind(rs, "address")] == [address.split("/")[0]]
    assert of_kind(rs, "route") == []


def test_netns_endpoint_without_address_is_left_to_dhcp():
    rs = resources(NAT, {"c1": {"kind": "netns", "network": "lan0"}})
    assert of_kind(rs, "address") == [] and [r.get("ns") for r in of_kind(rs, "bridge_address")] == [""]  # only the gateway's
    assert of_kind(rs, "route") == []
    assert len(of_kind(rs, "veth")) == 1


def test_explicit_netns_is_borrowed_not_made():
    rs = resources(NAT, {"c1": {"kind": "netns", "network": "lan0", "netns": "myns", "ifname": "lan", "address": "10.30.0.9/24", "mac": "52:54:00:00:00:09"}})
    assert of_kind(rs, "netns") == []
    veth = one(rs, "veth")
    assert (veth.get("peer_ns"), veth.get("peer_name"), veth.get("peer_mac")) == ("myns", "lan", "52:54:00:00:00:09")
    assert one(rs, "route").key == "myns/default"
    assert [r.key for r in of_kind(rs, "address") if r.get("ns") == "myns"] == ["myns/lan/10.30.0.9/24"]


# --- tap / tun endpoints ------------------------------------------------------------------------


def test_tap_owner_by_name_resolves_to_uid():
    nobody = pwd.getpwnam("nobody")
    rs = resources(NAT, {"vm": {"kind": "tap", "network": "lan0", "owner": "nobody", "group": nobody.pw_gid}})
    tap = one(rs, "tap")
    assert tap.get("owner") == nobody.pw_uid and isinstance(tap.get("owner"), int)
    assert tap.get("group") == nobody.pw_gid


def test_tap_numeric_owner_and_no_owner():
    rs = resources(NAT, {"vm": {"kind": "tap", "owner": 4321}, "vm2": {"kind": "tap"}})
    owners = {r.key: r.get("owner") for r in of_kind(rs, "tap")}
    assert owners == {names.tap("lab", "vm"): 4321, names.tap("lab", "vm2"): None}


def test_tap_device_and_macs():
    rs = resources(NAT, {"vm": {"kind": "tap", "network": "lan0"}, "vm2": {"kind": "tap", "ifname": "tap7", "mac": "52:54:00:ab:cd:ef"}})
    taps = {r.key: r for r in of_kind(rs, "tap")}
    vm = taps[names.tap("lab", "vm")]
    assert vm.get("mac") == names.tap_mac(names.mac("lab", "vm"))
    assert vm.get("mac").startswith("fe:")
    assert vm.get("master") == BR and vm.get("mode") == "tap"
    assert vm.get("mark") == "vnet:lab:tap:vm"
    assert taps["tap7"].get("mac") == "fe:54:00:ab:cd:ef"
    assert taps["tap7"].get("master") is None


def test_tun_endpoint_with_address():
    rs = resources(NAT, {"t1": {"kind": "tun", "address": "172.16.0.1/30"}})
    tun = one(rs, "tap")
    assert tun.get("mode") == "tun" and tun.get("mac") is None and tun.get("mark") == "vnet:lab:tun:t1"
    addrs = {r.get("ifname"): r for r in of_kind(rs, "address")}
    assert addrs[tun.key].get("address") == "172.16.0.1" and addrs[tun.key].get("prefixlen") == 30
    assert addrs[tun.key].get("ns") == ""


# --- determinism and digests --------------------------------------------------------------------

FULL = (
    {**NAT, "lan1": {"mode": "isolated"}, "lan2": {"mode": "bridged", "uplink": "enp3s0"}},
    {
        "c1": {"kind": "netns", "network": "lan0", "address": "10.30.0.5/24"},
        "c2": {"kind": "netns", "network": "lan1"},
        "vm": {"kind": "tap", "network": "lan2", "owner": "nobody"},
        "t1": {"kind": "tun", "address": "172.16.0.1/30"},
    },
)


def test_desired_is_deterministic():
    a = resources(*FULL)
    b = resources(*FULL)
    assert a == b
    assert [r.to_json() for r in a] == [r.to_json() for r in b]  # extra (the rules' text) too
    by_id(a)  # and no two resources share an id


def test_every_kind_appears_in_a_full_topology():
    kinds = {r.kind for r in resources(*FULL)}
    assert kinds == {"bridge", "bridge_address", "address", "sysctl", "uplink", "netns", "veth", "route", "tap", "ruleset"}


def test_names_digests_are_hashlibs_sha256():
    """names.sha256 (CPython's _sha256, no OpenSSL) gives what hashlib.sha256 gives: every name and mark stays."""
    import hashlib

    for data in (b"", b"lab\0lan0", "ä".encode() * 1000):
        assert names.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    h = hashlib.sha256("\0".join(["lab", "vm1", "0"]).encode()).hexdigest()
    assert names.mac("lab", "vm1", "0") == f"52:54:00:{h[0:2]}:{h[2:4]}:{h[4:6]}"


def test_topology_name_changes_every_name():
    a = by_id(resources(*FULL, name="lab"))
    b = by_id(resources(*FULL, name="lab2"))
    shared = set(a) & set(b)
    # only the uplink NIC, its forwarding switch and the tun's address may be shared
    assert shared <= {"uplink:enp3s0", "sysctl:@host/net/ipv4/conf/eth0/forwarding"}


def identity(rs: list[Resource]) -> tuple[str, str]:
    """What observing compares besides the rule count: the structure digest (the inet table's
    comment) and the digest of the set and map elements."""
    r = one(rs, "ruleset")
    return r.get("digest"), r.get("elements")


def test_ruleset_digest_is_stable_and_follows_the_rules():
    base = one(resources(NAT), "ruleset")
    assert identity(resources(NAT)) == identity([base])
    assert re.fullmatch(r"[0-9a-f]{16}", base.get("digest"))
    assert re.fullmatch(r"[0-9a-f]+", base.get("elements"))
    variants = [
        resources({"lan0": {"mode": "nat", "subnet": "10.31.0.0/24"}}),
        resources(NAT, facts=HostFacts(default_uplink="eth1")),
        resources({"lan0": {**NAT["lan0"], "bridge": "br-other"}}),
        resources({**NAT, "lan1": {"mode": "isolated"}}),
        resources({"lan0": {"mode": "host", "subnet": "10.30.0.0/24"}}),
    ]
    ids = [identity(rs) for rs in variants]
    assert identity([base]) not in ids
    assert len(set(ids)) == len(ids)
    # all of these differ in set elements only: the rules and sets (the structure) are the same
    assert {d for d, _ in ids} == {base.get("digest")}
    assert base.get("elements") not in {e for _, e in ids}


def test_digest_ignores_what_is_not_in_the_rules():
    base = identity(resources(NAT))
    # endpoints without port policies do not change the rules or their elements, so neither digest
    # (the gateway's address does: no port may claim it)
    other = resources(
        NAT,
        {"vm": {"kind": "tap", "network": "lan0", "spoofing": "allow"}, "c1": {"kind": "netns", "network": "lan0", "spoofing": "allow"}},
    )
    assert identity(other) == base
    # while a guarded port is in the rules' elements (its MAC in port_mac), and so in their digest;
    # the first one brings its checks (a chain a topology does not need is left out: nftrules.render),
    # and every one after it of the same kind only elements
    guarded = identity(resources(NAT, {"vm": {"kind": "tap", "network": "lan0"}}))
    assert guarded[1] != base[1]
    two = identity(resources(NAT, {"vm": {"kind": "tap", "network": "lan0"}, "vm2": {"kind": "tap", "network": "lan0"}}))
    assert two[1] != guarded[1]
    assert two[0] == guarded[0]  # the same structure


@pytest.mark.parametrize("bridge, uplink", [("br.lan-0", "eth0.100"), ("x_-.y", "en-p3s0"), (None, "wlp2s0")])
def test_rendered_rules_quote_every_interface_name(bridge, uplink):
    net = {**NAT["lan0"], "uplink": uplink}
    if bridge:
        net["bridge"] = bridge
    rs = resources({"lan0": net, "lan1": {"mode": "isolated"}})
    text = ruleset_text(rs)
    for name in (bridge or BR, uplink, names.bridge("lab", "lan1")):
        hits = [m.start() for m in re.finditer(re.escape(name), text)]
        assert hits, f"{name} missing from the rules"
        for i in hits:
            assert text[i - 1] == '"' and text[i + len(name)] == '"', f"unquoted {name!r} at {i}: {text[i-20:i+20]!r}"


def test_table_comment_round_trip():
    digest = one(resources(NAT), "ruleset").get("digest")
    assert names.parse_digest_mark(names.digest_mark("lab", digest)) == ("lab", digest)
    for foreign in (None, "", "docker", "vnet:lab", "other:lab:abc", "vnet:lab:abc:extra"):
        assert names.parse_digest_mark(foreign) is None


def test_a_nat_network_beside_a_bridged_one_leaves_through_the_bridge_before_and_after_apply():
    """The bridged move takes the default route to the bridge: desired state must not change with
    it (the fuzz test found a plan that never settled)."""
    from vnet import spec as _spec

    topo = _spec.load_text("name: t\nnetworks:\n  b: {mode: bridged, bridge: br0, uplink: eth0}\n  n: {mode: nat, subnet: 10.9.0.0/29}\n")
    before = desired(topo, HostFacts(default_uplink="eth0"))
    after = desired(topo, HostFacts(default_uplink="br0"))
    assert before == after
    assert any(r.kind == "sysctl" and r.get("path") == "net/ipv4/conf/br0/forwarding" for r in after)
    assert not any(r.kind == "sysctl" and r.get("path") == "net/ipv4/conf/eth0/forwarding" for r in after)


def test_a_rate_beyond_what_tbf_carries_is_capped_for_the_download_direction():
    from vnet import spec as _spec
    from vnet.kinds.qdisc import TBF_MAX_BITS

    topo = _spec.load_text("name: t\nnetworks:\n  n: {mode: host, subnet: 10.9.0.0/24}\n"
                           "endpoints:\n  a: {kind: netns, network: n, address: 10.9.0.5/24, rate: 100gbit}\n")
    (q,) = [r for r in desired(topo) if r.kind == "qdisc"]
    assert q.get("rate") == TBF_MAX_BITS < 100 * 10**9


def test_an_mtu_no_tap_takes_is_refused():
    from vnet import spec as _spec
    from vnet.errors import SpecError

    with pytest.raises(SpecError, match="networks.n.mtu"):
        _spec.load_text("name: t\nnetworks:\n  n: {mode: host, subnet: 10.9.0.0/24, mtu: 65535}\n")
    assert _spec.load_text("name: t\nnetworks:\n  n: {mode: host, subnet: 10.9.0.0/24, mtu: 65521}\n").networks["n"].mtu == 65521
