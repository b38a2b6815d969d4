"""Port forwards (`forwards:`), traffic between networks (`allow:`) and per-port policies
(`isolated`, `spoofing`, `rate`): how they are validated, and how they render into the two nftables
tables of a topology — as set and map elements, never as extra rules."""

from __future__ import annotations

import ipaddress
import re

import pytest
import yaml

from vnet import names
from vnet.desired import desired
from vnet.facts import HostFacts
from vnet.errors import Problem, SpecError
from vnet.resources import Resource
from vnet.spec import load_text
from vnet.spec.models import Topology

ETH0 = HostFacts(default_uplink="eth0")
T = "lab"
BR0 = names.bridge(T, "lan0")  # nat, 192.168.70.0/24
BR1 = names.bridge(T, "lan1")  # host, 192.168.71.0/24

# --- helpers ------------------------------------------------------------------------------------


def doc(networks: dict | None = None, endpoints: dict | None = None, vms: dict | None = None, allow: list | None = None) -> dict:
    """A topology: by default a nat network lan0 and a host network lan1, with extras merged in."""
    data: dict = {
        "name": T,
        "networks": {
            "lan0": {"mode": "nat", "subnet": "192.168.70.0/24", "uplink": "eth0"},
            "lan1": {"mode": "host", "subnet": "192.168.71.0/24"},
            **(networks or {}),
        },
    }
    if endpoints:
        data["endpoints"] = endpoints
    if vms:
        data["vms"] = vms
    if allow is not None:
        data["allow"] = allow
    return data


def nat(**fields) -> dict:
    return {"lan0": {"mode": "nat", "subnet": "192.168.70.0/24", "uplink": "eth0", **fields}}


def load(data: dict) -> Topology:
    return load_text(yaml.safe_dump(data, sort_keys=False))


def problems(data: dict) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        load(data)
    assert info.value.problems, "a SpecError must list at least one problem"
    return info.value.problems


def paths(data: dict) -> list[str]:
    return [p.path for p in problems(data)]


def resources(data: dict) -> list[Resource]:
    return desired(load(data), ETH0)


def of_kind(rs: list[Resource], kind: str) -> list[Resource]:
    return [r for r in rs if r.kind == kind]


def ruleset(rs: list[Resource]) -> Resource:
    found = of_kind(rs, "ruleset")
    assert len(found) == 1, f"expected one ruleset, got {found}"
    return found[0]


def text_of(data: dict) -> str:
    return ruleset(resources(data)).get("text")


def table(text: str, family: str) -> str:
    m = re.search(rf"^table {family} \S+ {{\n(.*?)^}}", text, re.S | re.M)
    assert m, f"no {family} table"
    return m.group(1)


def elements(text: str, name: str, family: str = "inet") -> list[str]:
    """The elements of a named set or map as written; [] when it has none. Fails if it is absent."""
    m = re.search(rf"^  (?:set|map) {name} {{\n(.*?)^  }}", table(text, family), re.S | re.M)
    assert m, f"no set or map {name!r} in the {family} table"
    found = re.search(r"^    elements = { (.*) }$", m.group(1), re.M)
    return found.group(1).split(", ") if found else []


def chains(text: str) -> dict[tuple[str, str], list[str]]:
    """(family, chain) → its rule lines (without the `type … policy` line), for both tables."""
    out = {}
    for family in ("inet", "bridge"):
        for name, body in re.findall(r"^  chain (\S+) {\n(.*?)^  }", table(text, family), re.S | re.M):
            out[(family, name)] = [line.strip() for line in body.splitlines() if not line.strip().startswith("type ")]
    return out


def rule_lines(text: str) -> int:
    return sum(len(rules) for rules in chains(text).values())


def limits(text: str) -> dict[str, str]:
    """name → spec of the `limit` objects of the bridge table."""
    return dict(re.findall(r"^  limit (\S+) { (.*) }$", table(text, "bridge"), re.M))


# --- a small evaluator of the rendered chains -----------------------------------------------------
# Enough of nft's semantics for the rules vnet writes: concatenated lookups in named sets and maps
# (with intervals), `!=`, `ct state`, `ct status`, `fib daddr type local` and a dnat through a map.
# Anything else raises Unsupported, so a change of the rules' shape is noticed, not misjudged.


class Unsupported(Exception):
    pass


_KEYS = {("iifname",): "iifname", ("oifname",): "oifname", ("meta", "l4proto"): "l4proto", ("th", "dport"): "dport",
         ("ether", "saddr"): "ether_saddr", ("ip", "saddr"): "saddr", ("ip", "daddr"): "daddr"}


def _sets(text: str, family: str) -> dict[str, list[list[str]]]:
    out = {}
    for name, body in re.findall(r"^  (?:set|map) (\S+) {\n(.*?)^  }", table(text, family), re.S | re.M):
        found = re.search(r"^    elements = { (.*) }$", body, re.M)
        out[name] = [e for e in found.group(1).split(", ")] if found else []
    return out


def _component_matches(component: str, value: object) -> bool:
    component = component.strip().strip('"')
    m = re.fullmatch(r"(\d+)-(\d+)", component)
    if m and isinstance(value, int):
        return int(m.group(1)) <= value <= int(m.group(2))
    return component == str(value)


def _lookup(entries: list[str], values: list[object]) -> str | None:
    """The element (or, for a map, its value) that the concatenated `values` hit; None on a miss."""
    for entry in entries:
        key, _, mapped = entry.partition(" : ")
        parts = key.split(" . ")
        if len(parts) != len(values):
            raise Unsupported(f"element {entry!r} does not have {len(values)} fields")
        if all(_component_matches(c, v) for c, v in zip(parts, values)):
            return mapped or entry
    return None


def evaluate(text: str, family: str, chain: str, packet: dict) -> tuple[str, str | None]:
    """(verdict, dnat target) of `packet` walking one base chain: accept/drop/dnat, or the policy."""
    sets = _sets(text, family)
    for rule in chains(text)[(family, chain)]:
        toks = rule.split()
        i, matched = 0, True
        while matched and i < len(toks):
            tok = toks[i]
            if tok in ("accept", "drop") and i == len(toks) - 1:
                return tok, None
            if tok == "ct" and toks[i + 1] in ("state", "status"):
                wanted = set(toks[i + 2].split(","))
                have = packet["ct_state"] if toks[i + 1] == "state" else packet.get("ct_status", set())
                matched, i = bool(wanted & set(have if isinstance(have, (set, list, tuple)) else {have})), i + 3
                continue
            if toks[i : i + 4] == ["fib", "daddr", "type", "local"]:
                matched, i = packet.get("to_local", False), i + 4
                continue
            if toks[i : i + 6] == ["fib", "daddr", ".", "iif", "type", "local"]:  # an address of the input device
                matched, i = packet.get("to_iif", packet.get("to_local", False)), i + 6
                continue
            if toks[i : i + 3] in (["dnat", "ip", "to"], ["dnat", "ip6", "to"]):
                if toks[i + 1] != packet.get("family", "ip"):
                    matched = False  # a dnat of the other address family does not apply
                    break
                keys, j = [], i + 3
                while toks[j] != "map":
                    if toks[j] == ".":
                        j += 1
                        continue
                    pair = (toks[j],) if (toks[j],) in _KEYS else tuple(toks[j : j + 2])
                    if pair not in _KEYS:
                        raise Unsupported(rule)
                    keys.append(_KEYS[pair])
                    j += len(pair)
                if j + 2 != len(toks) or not toks[j + 1].startswith("@"):
                    raise Unsupported(rule)
                target = _lookup(sets[toks[j + 1][1:]], [packet[k] for k in keys])
                if target is None:
                    matched = False
                    break
                return "dnat", target
            # a lookup: key [. key]… [!=] @set
            keys = []
            while True:
                pair = (toks[i],) if (toks[i],) in _KEYS else tuple(toks[i : i + 2])
                if pair not in _KEYS:
                    raise Unsupported(f"{rule!r} at {toks[i]!r}")
                keys.append(_KEYS[pair])
                i += len(pair)
                if toks[i] != ".":
                    break
                i += 1
            negate = toks[i] == "!="
            i += negate
            if not toks[i].startswith("@"):
                raise Unsupported(f"{rule!r} at {toks[i]!r}")
            hit = _lookup(sets[toks[i][1:]], [packet[k] for k in keys]) is not None
            matched, i = hit != negate, i + 1
        if matched:
            raise Unsupported(f"rule without verdict: {rule!r}")
    return "policy", None


def pkt(iif: str, oif: str = "", proto: str = "tcp", dport: int = 80, state: str = "new", status: tuple = (), to_local=False,
        **more) -> dict:
    return {"iifname": iif, "oifname": oif, "l4proto": proto, "dport": dport, "ct_state": {state}, "ct_status": set(status),
            "to_local": to_local, "ether_saddr": None, "saddr": None, "daddr": None, **more}


# --- forwards: validation -----------------------------------------------------------------------

WEB = {"kind": "netns", "network": "lan0", "address": "192.168.70.10/24"}
DYN = {"kind": "netns", "network": "lan0"}  # configured by DHCP: no fixed address
DHCP0 = nat(dhcp=True)
DISK = "/srv/vm.qcow2"  # a VM that boots a disk: its QEMU command line needs nothing built


def fwd(*forwards: dict, endpoints: dict | None = None, vms: dict | None = None, **net) -> dict:
    return doc(nat(forwards=list(forwards), **net), endpoints={"web": WEB, "dyn": DYN, **(endpoints or {})}, vms=vms)


def test_valid_forwards_load():
    t = load(fwd({"port": 8080, "to": "web:80"}, {"proto": "udp", "port": "5000-5010", "to": "192.168.70.20"}))
    assert [(f.proto, f.port, f.to) for f in t.networks["lan0"].forwards] == [
        ("tcp", 8080, "web:80"),
        ("udp", "5000-5010", "192.168.70.20"),
    ]


@pytest.mark.parametrize("mode, extra", [("host", {"subnet": "192.168.72.0/24"}), ("isolated", {}), ("bridged", {"uplink": "enp3s0"})])
def test_forwards_need_a_nat_network(mode, extra):
    data = doc({"lan2": {"mode": mode, **extra, "forwards": [{"port": 8080, "to": "10.0.0.5"}]}})
    assert paths(data) == ["networks.lan2.forwards.0"]
    assert "nat" in problems(data)[0].message


def test_forward_to_an_unknown_name():
    ps = problems(fwd({"port": 8080, "to": "nobody:80"}))
    assert [p.path for p in ps] == ["networks.lan0.forwards.0.to"]
    assert "nobody" in ps[0].message


def test_forward_to_an_endpoint_without_address():
    ps = problems(fwd({"port": 8080, "to": "dyn"}))
    assert [p.path for p in ps] == ["networks.lan0.forwards.0.to"]
    assert "no fixed address" in ps[0].message


def test_forward_to_an_endpoint_of_another_network():
    data = fwd({"port": 8080, "to": "back"}, endpoints={"back": {"kind": "netns", "network": "lan1", "address": "192.168.71.10/24"}})
    assert paths(data) == ["networks.lan0.forwards.0.to"]


def test_forward_to_a_tap_endpoint_is_refused():
    # vnet never knows a tap guest's address
    assert paths(fwd({"port": 8080, "to": "vm"}, endpoints={"vm": {"kind": "tap", "network": "lan0"}})) == ["networks.lan0.forwards.0.to"]


def test_forward_to_a_vm_nic_without_address():
    data = doc(
        {**DHCP0, "lan0": {**DHCP0["lan0"], "forwards": [{"port": 2222, "to": "vm:22"}]}},
        vms={"vm": {"disk": DISK, "nics": [{"network": "lan0"}]}},
    )
    ps = problems(data)
    assert [p.path for p in ps] == ["networks.lan0.forwards.0.to"]
    assert "no fixed address" in ps[0].message


def test_forward_to_a_vm_nic_with_a_dhcp_reservation_is_accepted():
    data = doc(
        {**DHCP0, "lan0": {**DHCP0["lan0"], "forwards": [{"port": 2222, "to": "vm:22"}]}},
        vms={"vm": {"disk": DISK, "nics": [{"network": "lan1"}, {"network": "lan0", "address": "192.168.70.50"}]}},
    )
    assert load(data).networks["lan0"].forwards[0].to == "vm:22"


@pytest.mark.parametrize(
    "to",
    ["10.9.9.9", "192.168.71.10", "192.168.70.1", "192.168.70.1:80", "192.168.70.0", "192.168.70.255"],
    ids=["elsewhere", "other-network", "gateway", "gateway-port", "network", "broadcast"],
)
def test_forward_target_address_must_be_a_host_of_the_subnet(to):
    assert paths(fwd({"port": 8080, "to": to})) == ["networks.lan0.forwards.0.to"]


def test_forward_target_is_checked_against_a_declared_gateway():
    assert paths(fwd({"port": 8080, "to": "192.168.70.254"}, address="192.168.70.254")) == ["networks.lan0.forwards.0.to"]
    # the first host is then free to be a target
    assert load(fwd({"port": 8080, "to": "192.168.70.1"}, address="192.168.70.254"))


@pytest.mark.parametrize("to", ["web:0", "web:70000", "web:", "web:x", "1.2.3:80", "Web", "web:80:81"])
def test_forward_target_syntax(to):
    assert paths(fwd({"port": 8080, "to": to})) == ["networks.lan0.forwards.0.to"]


def test_the_same_port_forwarded_twice():
    ps = problems(fwd({"port": 8080, "to": "web:80"}, {"port": 8080, "to": "192.168.70.20"}))
    assert [p.path for p in ps] == ["networks.lan0.forwards.1.port"]
    assert "forwards.0" in ps[0].message


def test_overlapping_ranges_are_forwarded_twice():
    data = fwd({"proto": "udp", "port": "5000-5010", "to": "web"}, {"proto": "udp", "port": "5010-5020", "to": "192.168.70.20"})
    assert paths(data) == ["networks.lan0.forwards.1.port"]
    data = fwd({"port": "6000-6100", "to": "web"}, {"port": 6050, "to": "192.168.70.20"})
    assert paths(data) == ["networks.lan0.forwards.1.port"]


def test_the_same_port_on_two_nat_networks():
    data = doc(
        {
            **nat(forwards=[{"port": 8080, "to": "192.168.70.10"}]),
            "lan2": {"mode": "nat", "subnet": "192.168.72.0/24", "uplink": "eth0", "forwards": [{"port": "8000-8100", "to": "192.168.72.10"}]},
        }
    )
    assert paths(data) == ["networks.lan2.forwards.0.port"]


def test_the_same_port_on_tcp_and_udp_is_fine():
    t = load(fwd({"proto": "tcp", "port": 53, "to": "web"}, {"proto": "udp", "port": 53, "to": "web"}))
    assert len(t.networks["lan0"].forwards) == 2


def test_a_range_forwards_to_the_same_ports():
    ps = problems(fwd({"port": "5000-5010", "to": "web:80"}))
    assert [p.path for p in ps] == ["networks.lan0.forwards.0.to"]


@pytest.mark.parametrize("port, ok", [("1000-5095", True), ("1000-5096", False), ("1-4096", True), ("1-4097", False), ("61440-65535", True)])
def test_a_range_holds_at_most_4096_ports(port, ok):
    data = fwd({"port": port, "to": "web"})
    if ok:
        assert load(data).networks["lan0"].forwards[0].port == port
    else:
        assert paths(data) == ["networks.lan0.forwards.0.port"]


@pytest.mark.parametrize("port", [0, 70000, 65536, -1, "abc", "", "-80", "90-80", "0-10", "1-70000", "8o", [80], {"a": 1}, None, False])
def test_bad_forward_ports(port):
    got = paths(fwd({"port": port, "to": "web"}))
    # a value of the wrong type may be reported once per accepted type (…port.int, …port.str)
    assert got and all(p == "networks.lan0.forwards.0.port" or p.startswith("networks.lan0.forwards.0.port.") for p in got), got


@pytest.mark.parametrize("where", ["forward", "allow"])
def test_a_boolean_is_not_a_port(where):
    if where == "forward":
        data, path = fwd({"port": True, "to": "web"}), "networks.lan0.forwards.0.port"
    else:
        data, path = doc(allow=[{"from": "lan0", "to": "lan1", "proto": "tcp", "ports": [True]}]), "allow.0.ports.0"
    try:
        load(data)
    except SpecError as exc:
        assert [p.path for p in exc.problems] == [path]
    else:
        raise AssertionError("a boolean was accepted as a port")


def test_a_range_without_its_end_is_refused():
    try:
        t = load(fwd({"port": "5000-", "to": "web"}))
    except SpecError as exc:
        assert [p.path for p in exc.problems] == ["networks.lan0.forwards.0.port"]
    else:
        raise AssertionError(f"accepted as port {t.networks['lan0'].forwards[0].port!r}")


def test_missing_port_or_target():
    assert paths(fwd({"to": "web"})) == ["networks.lan0.forwards.0.port"]
    assert paths(fwd({"port": 80})) == ["networks.lan0.forwards.0.to"]
    assert paths(fwd({"port": 80, "to": "web", "proto": "icmp"})) == ["networks.lan0.forwards.0.proto"]


# --- allow: validation --------------------------------------------------------------------------

MODES = {
    "iso": {"mode": "isolated"},
    "wan": {"mode": "bridged", "uplink": "enp3s0"},
}


def test_valid_allow_rules_load():
    t = load(
        doc(
            allow=[
                {"from": "lan0", "to": "lan1", "proto": "tcp", "ports": [80, "8000-8010"]},
                {"from": "lan1", "to": "lan0"},
                {"from": "lan1", "to": "lan0", "proto": "udp"},
            ]
        )
    )
    assert [(r.from_, r.to, r.proto, r.ports) for r in t.allow] == [
        ("lan0", "lan1", "tcp", [80, "8000-8010"]),
        ("lan1", "lan0", None, None),
        ("lan1", "lan0", "udp", None),
    ]


@pytest.mark.parametrize("field", ["from", "to"])
def test_allow_names_an_unknown_network(field):
    rule = {"from": "lan0", "to": "lan1", field: "nowhere"}
    ps = problems(doc(allow=[rule]))
    assert [p.path for p in ps] == [f"allow.0.{field}"]
    assert "nowhere" in ps[0].message


@pytest.mark.parametrize("net", ["iso", "wan"])
@pytest.mark.parametrize("field", ["from", "to"])
def test_allow_with_an_isolated_or_bridged_network(net, field):
    rule = {"from": "lan0", "to": "lan1", field: net}
    assert paths(doc(MODES, allow=[rule])) == [f"allow.0.{field}"]


def test_allow_within_one_network():
    assert paths(doc(allow=[{"from": "lan0", "to": "lan0"}])) == ["allow.0"]


def test_allow_ports_need_a_protocol():
    assert paths(doc(allow=[{"from": "lan0", "to": "lan1", "ports": [80]}])) == ["allow.0.ports"]


@pytest.mark.parametrize("ports", [[0], [70000], ["abc"], ["1-5000"]])
def test_allow_bad_ports(ports):
    assert paths(doc(allow=[{"from": "lan0", "to": "lan1", "proto": "tcp", "ports": ports}])) == ["allow.0.ports.0"]


def test_allow_unknown_key_and_protocol():
    assert paths(doc(allow=[{"from": "lan0", "to": "lan1", "port": 80}])) == ["allow.0.port"]
    assert paths(doc(allow=[{"from": "lan0", "to": "lan1", "proto": "icmp"}])) == ["allow.0.proto"]


# --- port policies: validation ------------------------------------------------------------------


def policy_doc(where: str, **policy) -> tuple[dict, str]:
    """A topology with one port carrying `policy`, and the path of that port in the file."""
    if where == "netns":
        return doc(endpoints={"c1": {"kind": "netns", "network": "lan0", **policy}}), "endpoints.c1"
    if where == "tap":
        return doc(endpoints={"t1": {"kind": "tap", "network": "lan0", **policy}}), "endpoints.t1"
    return doc(vms={"vm": {"disk": DISK, "nics": [{"network": "lan0", **policy}]}}), "vms.vm.nics.0"


WHERE = ["netns", "tap", "vm"]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("rate", ["100mbit", "500kbit", "1gbit", "20mbit", "9999999kbit"])
def test_good_rates(where, rate):
    data, _ = policy_doc(where, rate=rate)
    load(data)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("rate", ["100mb", "0mbit", "1.5gbit", "100", "100 mbit", "100Mbit", "-5mbit", "010mbit", "100mbps", 100, "", "10000000mbit"])
def test_bad_rates(where, rate):
    data, path = policy_doc(where, rate=rate)
    assert paths(data) == [f"{path}.rate"]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("value", ["deny", "allow"])
def test_good_spoofing_values(where, value):
    data, _ = policy_doc(where, spoofing=value)
    load(data)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("value", ["off", "Deny", "ALLOW", True, False, "", 1, None])
def test_bad_spoofing_values(where, value):
    data, path = policy_doc(where, spoofing=value)
    assert paths(data) == [f"{path}.spoofing"]


@pytest.mark.parametrize("where", WHERE)
def test_isolated_is_a_boolean(where):
    data, path = policy_doc(where, isolated="sometimes")
    assert paths(data) == [f"{path}.isolated"]


def test_tun_endpoints_have_no_port_policy():
    assert paths(doc(endpoints={"t1": {"kind": "tun", "rate": "10mbit"}})) == ["endpoints.t1.rate"]


# --- forwards: rendering ------------------------------------------------------------------------


def test_forwards_render_as_map_elements():
    text = text_of(fwd({"port": 8080, "to": "web:80"}, {"proto": "udp", "port": "5000-5010", "to": "192.168.70.20"}))
    got = elements(text, "forwards")
    # keyed by the way in: the uplink, the host itself (lo), the forward's own network (hairpin)
    ways = ['"eth0"', '"lo"', f'"{BR0}"']
    assert got[:3] == [f"{w} . tcp . 8080 : 192.168.70.10 . 80" for w in ways]
    # a range is one element per port, each to the same port on the target
    assert got[3:] == [f"{w} . udp . {p} : 192.168.70.20 . {p}" for p in range(5000, 5011) for w in ways]
    # reached through the map from prerouting and from the host itself
    prerouting = chains(text)[("inet", "prerouting")]
    output = chains(text)[("inet", "output")]
    assert any("map @forwards" in r and r.startswith("iifname @uplinks fib daddr . iif type local") for r in prerouting)
    assert any("map @forwards" in r and r.startswith("iifname @bridges fib daddr type local") for r in prerouting)
    assert any("oifname . meta l4proto . th dport map @forwards" in r for r in output)
    assert re.search(r"^  map forwards {\n    type ifname . inet_proto . inet_service : ipv4_addr . inet_service\n    counter\n", table(text, "inet"), re.M)


def test_forward_by_name_without_port_keeps_the_port():
    assert elements(text_of(fwd({"port": 443, "to": "web"})), "forwards")[0] == '"eth0" . tcp . 443 : 192.168.70.10 . 443'


def test_forward_to_a_vm_nic_uses_its_reservation():
    data = doc(
        {**DHCP0, "lan0": {**DHCP0["lan0"], "forwards": [{"port": 2222, "to": "vm:22"}, {"proto": "udp", "port": 9999, "to": "vm"}]}},
        vms={"vm": {"disk": DISK, "nics": [{"network": "lan1"}, {"network": "lan0", "address": "192.168.70.50"}]}},
    )
    got = [e.split(" . ", 1)[1] for e in elements(text_of(data), "forwards")]
    assert sorted(set(got)) == ["tcp . 2222 : 192.168.70.50 . 22", "udp . 9999 : 192.168.70.50 . 9999"]


def test_forwards_of_two_networks_share_one_map():
    data = doc(
        {
            **nat(forwards=[{"port": 8080, "to": "192.168.70.10"}]),
            "lan2": {"mode": "nat", "subnet": "192.168.72.0/24", "forwards": [{"port": 8081, "to": "192.168.72.10:80"}]},
        }
    )
    text = text_of(data)
    br2 = names.bridge(T, "lan2")
    assert elements(text, "forwards") == [f'{w} . tcp . 8080 : 192.168.70.10 . 8080' for w in ('"eth0"', '"lo"', f'"{BR0}"')] + [
        f'{w} . tcp . 8081 : 192.168.72.10 . 80' for w in ('"eth0"', '"lo"', f'"{br2}"')]
    assert sorted(elements(text, "hairpin")) == sorted(
        [f'192.168.70.0/24 . "{BR0}"', f'192.168.72.0/24 . "{names.bridge(T, "lan2")}"']
    )


def test_forward_walk():
    """A new connection to the host's port is dnat'ed to the target and let through to its bridge;
    a port nobody forwarded is not, and the same connection undnat'ed is dropped."""
    text = text_of(fwd({"port": 8080, "to": "web:80"}, {"proto": "udp", "port": "5000-5010", "to": "192.168.70.20"}))
    assert evaluate(text, "inet", "prerouting", pkt("eth0", dport=8080, to_local=True)) == ("dnat", "192.168.70.10 . 80")
    assert evaluate(text, "inet", "prerouting", pkt("eth0", proto="udp", dport=5007, to_local=True)) == ("dnat", "192.168.70.20 . 5007")
    assert evaluate(text, "inet", "prerouting", pkt("eth0", dport=8081, to_local=True))[0] == "policy"
    assert evaluate(text, "inet", "prerouting", pkt("eth0", proto="udp", dport=8080, to_local=True))[0] == "policy"
    assert evaluate(text, "inet", "prerouting", pkt("eth0", dport=8080, to_local=False))[0] == "policy"
    assert evaluate(text, "inet", "forward", pkt("eth0", BR0, dport=80, status=("dnat",)))[0] == "accept"
    assert evaluate(text, "inet", "forward", pkt("eth0", BR0, dport=80))[0] == "drop"
    assert evaluate(text, "inet", "forward", pkt("eth0", BR0, dport=80, state="established"))[0] == "accept"


def test_an_isolated_network_does_not_reach_forward_targets():
    data = doc({**nat(forwards=[{"port": 8080, "to": "web:80"}]), "iso": {"mode": "isolated"}}, endpoints={"web": WEB})
    text = text_of(data)
    iso = names.bridge(T, "iso")
    # a guest of the isolated network sends to the host's uplink address, port 8080
    verdict, target = evaluate(text, "inet", "prerouting", pkt(iso, dport=8080, to_local=True))
    if verdict != "dnat":
        return  # never translated: it stays a packet for the host, which the input chain drops
    forwarded = evaluate(text, "inet", "forward", pkt(iso, BR0, dport=80, status=("dnat",)))[0]
    assert forwarded == "drop", f"{iso} → {target} is {forwarded}ed"


def test_a_forward_is_let_through_before_the_isolation_rules_only_where_none_can_drop_it():
    """The forwards' rule comes right after the established flows (fewer rules for every forwarded
    connection) only where no port is isolated and no uplink is an isolated network's bridge; the
    walks below hold whichever place it takes."""
    published = "iifname . oifname @published ct status dnat accept"
    plain = chains(text_of(fwd({"port": 8080, "to": "web:80"})))[("inet", "forward")]
    assert plain[:2] == ["ct state established,related accept", published]
    data = doc(nat(forwards=[{"port": 8080, "to": "web:80"}]), endpoints={"web": WEB, "lone": {**WEB, "address": "192.168.70.12/24", "isolated": True}})
    guarded = chains(text_of(data))[("inet", "forward")]
    assert guarded.index(published) > guarded.index("iifname . oifname @egress accept")


def test_an_isolated_port_on_the_uplinks_bridge_does_not_reach_a_forward():
    """A bridged network's bridge is the nat network's uplink, and an isolated port sits on it: its
    connection to a forward is dropped, as the isolation rules say, though it comes in on the uplink."""
    br = names.bridge(T, "wan")
    data = doc(
        {"wan": {"mode": "bridged", "uplink": "eth1"}, **nat(uplink=br, forwards=[{"port": 8080, "to": "web:80"}])},
        endpoints={"web": WEB, "lone": {"kind": "netns", "network": "wan", "isolated": True}},
    )
    text = text_of(data)
    lone_mac = next(r.get("peer_mac") for r in of_kind(resources(data), "veth") if r.get("peer_ns") == names.netns(T, "lone"))
    forward = lambda **k: evaluate(text, "inet", "forward", pkt(br, BR0, dport=80, status=("dnat",), **k))[0]  # noqa: E731
    assert forward(ether_saddr=lone_mac) == "drop"
    assert forward(ether_saddr="52:54:00:00:00:01") == "accept"  # any other host on that LAN: the forward works


def test_a_nat_network_uplinked_to_an_isolated_bridge_forwards_nothing():
    iso = names.bridge(T, "iso")
    data = doc({**nat(uplink=iso, forwards=[{"port": 8080, "to": "web:80"}]), "iso": {"mode": "isolated"}}, endpoints={"web": WEB})
    text = text_of(data)
    assert evaluate(text, "inet", "forward", pkt(iso, BR0, dport=80, status=("dnat",)))[0] == "drop"


# --- allow: rendering ---------------------------------------------------------------------------


def test_allow_with_ports_renders_allowed_elements():
    text = text_of(doc(allow=[{"from": "lan0", "to": "lan1", "proto": "tcp", "ports": [80, "8000-8010"]}]))
    assert elements(text, "allowed") == [f'tcp . "{BR0}" . "{BR1}" . 80', f'tcp . "{BR0}" . "{BR1}" . 8000-8010']
    assert elements(text, "allowed_any") == []


def test_allow_without_proto_renders_allowed_any():
    text = text_of(doc(allow=[{"from": "lan1", "to": "lan0"}]))
    assert elements(text, "allowed_any") == [f'"{BR1}" . "{BR0}"']
    assert elements(text, "allowed") == []


def test_allow_with_proto_and_no_ports_is_every_port():
    text = text_of(doc(allow=[{"from": "lan1", "to": "lan0", "proto": "udp"}]))
    assert elements(text, "allowed") == [f'udp . "{BR1}" . "{BR0}" . 0-65535']


def test_allow_walk():
    text = text_of(doc(allow=[{"from": "lan0", "to": "lan1", "proto": "tcp", "ports": [80, "8000-8010"]}]))
    forward = lambda *a, **k: evaluate(text, "inet", "forward", pkt(*a, **k))[0]  # noqa: E731
    assert forward(BR0, BR1, dport=80) == "accept"
    assert forward(BR0, BR1, dport=8005) == "accept"
    assert forward(BR0, BR1, dport=81) == "drop"
    assert forward(BR0, BR1, proto="udp", dport=80) == "drop"
    assert forward(BR1, BR0, dport=80) == "drop"  # one way only
    assert forward(BR1, BR0, dport=40000, state="established") == "accept"  # replies come back
    assert forward(BR0, "eth0", dport=443) == "accept"  # nat still goes out
    assert forward(BR1, "eth0", dport=443) == "drop"  # a host network does not
    assert forward(BR0, BR0, dport=1) == "accept"  # inside a bridge (br_netfilter)


def test_allow_enables_forwarding_on_both_bridges_only():
    # two host networks: nothing forwards until a rule allows it
    nets = {"lan0": {"mode": "host", "subnet": "192.168.70.0/24"}, "lan2": {"mode": "host", "subnet": "192.168.72.0/24"}}
    assert of_kind(resources(doc(nets)), "sysctl") == []
    rs = resources(doc(nets, allow=[{"from": "lan1", "to": "lan2", "proto": "tcp", "ports": [22]}]))
    paths_ = sorted(r.get("path") for r in of_kind(rs, "sysctl"))
    assert paths_ == sorted(f"net/ipv4/conf/{names.bridge(T, n)}/forwarding" for n in ("lan1", "lan2"))
    assert all(r.get("value") == "1" for r in of_kind(rs, "sysctl"))


def test_forwarding_sysctls_are_per_interface_and_unique():
    rs = resources(doc(allow=[{"from": "lan0", "to": "lan1"}, {"from": "lan1", "to": "lan0", "proto": "tcp"}]))
    got = [r.get("path") for r in of_kind(rs, "sysctl")]
    assert sorted(got) == sorted(f"net/ipv4/conf/{d}/forwarding" for d in (BR0, "eth0", BR1))
    assert len(got) == len(set(got))
    assert not any("ip_forward" in p or "/all/" in p or "/default/" in p for p in got)


# --- port policies: rendering -------------------------------------------------------------------


def test_spoofing_deny_guards_mac_and_known_address():
    data = doc(
        {**DHCP0},
        endpoints={
            "web": WEB,  # fixed address, derived MAC
            "own": {"kind": "netns", "network": "lan0", "address": "192.168.70.11/24", "mac": "52:54:00:00:00:11"},
            "dyn": DYN,  # DHCP: MAC only
            "tp": {"kind": "tap", "network": "lan0", "mac": "52:54:00:00:00:22"},
        },
        vms={"vm": {"disk": DISK, "nics": [{"network": "lan0", "address": "192.168.70.50"}, {"network": "lan1", "mac": "52:54:00:00:00:33"}]}},
    )
    text = text_of(data)
    web, own, dyn, tp = (names.veth_host(T, "web"), names.veth_host(T, "own"), names.veth_host(T, "dyn"), names.tap(T, "tp"))
    vm0, vm1 = names.vm_tap(T, "vm", 0), names.vm_tap(T, "vm", 1)
    assert sorted(elements(text, "guarded", "bridge")) == sorted(f'"{p}"' for p in (web, own, dyn, tp, vm0, vm1))
    assert sorted(elements(text, "port_mac", "bridge")) == sorted(
        [
            f'"{web}" . {names.mac(T, "web")}',
            f'"{own}" . 52:54:00:00:00:11',
            f'"{dyn}" . {names.mac(T, "dyn")}',
            f'"{tp}" . 52:54:00:00:00:22',
            f'"{vm0}" . {names.mac(T, "vm", "0")}',
            f'"{vm1}" . 52:54:00:00:00:33',
        ]
    )
    # only ports whose address vnet knows are held to it
    assert sorted(elements(text, "ip_guarded", "bridge")) == sorted(f'"{p}"' for p in (web, own, vm0))
    assert sorted(elements(text, "port_ip", "bridge")) == sorted(
        [f'"{web}" . 192.168.70.10', f'"{own}" . 192.168.70.11', f'"{vm0}" . 192.168.70.50']
    )
    # the MAC in the rules is the guest's, never the host end of the tap
    assert names.tap_mac("52:54:00:00:00:22") not in text


def test_spoofing_allow_ports_are_in_no_guard():
    data = doc(
        endpoints={"web": {**WEB, "spoofing": "allow"}, "tp": {"kind": "tap", "network": "lan0", "spoofing": "allow"}},
        vms={"vm": {"disk": DISK, "nics": [{"network": "lan0", "spoofing": "allow"}]}},
    )
    text = text_of(data)
    for name in ("guarded", "port_mac", "ip_guarded", "port_ip", "isolated_ports", "upload_limits"):
        assert elements(text, name, "bridge") == [], name
    for port in (names.veth_host(T, "web"), names.tap(T, "tp"), names.vm_tap(T, "vm", 0)):
        assert port not in table(text, "bridge")


def test_spoofing_walk():
    text = text_of(doc(endpoints={"web": WEB}))
    web = names.veth_host(T, "web")
    assert f'"{web}" . {names.mac(T, "web")}' in elements(text, "port_mac", "bridge")
    c = chains(text)
    # a guarded port's frames from its own MAC go to the checks of its kind (one lookup), which
    # dispatch by type; any other frame of a guarded port is dropped
    assert f'"{web}" . {names.mac(T, "web")} : goto guard_fixed' in elements(text, "guard_ports", "bridge")
    # (after the fast path, which only accepts a fixed port's own TCP: tests/unit/test_guards.py)
    assert c[("bridge", "prerouting")][2:4] == ["iifname . ether saddr vmap @guard_ports", "iifname @guarded update @guard_drops { iifname } drop"]
    assert c[("bridge", "guard_fixed")][-1] == "update @guard_drops { iifname } drop"  # any other type, or a tag
    for name in ("guard_ip_fixed", "guard_ip6"):
        assert "udp sport { 67, 547 } update @guard_drops { iifname } drop" in c[("bridge", name)]
    assert any("ip saddr" in r and "@port_ip update @guard_drops { iifname } drop" in r for r in c[("bridge", "guard_ip_fixed")])
    assert any("arp saddr ip" in r and "@port_ip update @guard_drops { iifname } drop" in r for r in c[("bridge", "guard_arp")])


def test_isolated_ports():
    data = doc(
        endpoints={"lone": {**WEB, "isolated": True}, "peer": {"kind": "netns", "network": "lan0", "address": "192.168.70.11/24"}},
        vms={"vm": {"disk": DISK, "nics": [{"network": "lan1", "isolated": True}]}},
    )
    text = text_of(data)
    lone, peer, vm0 = names.veth_host(T, "lone"), names.veth_host(T, "peer"), names.vm_tap(T, "vm", 0)
    assert sorted(elements(text, "isolated_ports", "bridge")) == sorted([f'"{lone}"', f'"{vm0}"'])
    bridge_forward = lambda iif, oif: evaluate(text, "bridge", "forward", pkt(iif, oif))[0]  # noqa: E731
    assert bridge_forward(lone, peer) == "drop"
    assert bridge_forward(peer, lone) == "drop"
    assert bridge_forward(peer, peer + "x") == "policy"  # others switch as usual


def test_an_isolated_port_still_reaches_its_networks_service():
    data = doc(
        {"iso": {"mode": "isolated", "subnet": "10.77.0.0/24", "dhcp": True}},
        vms={"vm": {"disk": DISK, "nics": [{"network": "iso", "isolated": True}]}},
    )
    text = text_of(data)  # the combination is accepted: an isolated port on a served isolated network
    svc, tap = names.veth_host(T, "svc-iso"), names.vm_tap(T, "vm", 0)
    assert evaluate(text, "bridge", "forward", pkt(tap, svc, proto="udp", dport=67))[0] == "policy"
    assert evaluate(text, "bridge", "forward", pkt(svc, tap, proto="udp", dport=68))[0] == "policy"
    assert evaluate(text, "bridge", "forward", pkt(tap, tap + "x", proto="udp", dport=67))[0] == "drop"  # but no other port


def test_rate_limit_each_way():
    rs = resources(doc(endpoints={"web": {**WEB, "rate": "20mbit"}, "other": {"kind": "netns", "network": "lan0"}}))
    web = names.veth_host(T, "web")
    qdiscs = of_kind(rs, "qdisc")
    assert [(q.key, q.get("rate")) for q in qdiscs] == [(web, 20_000_000)]  # towards the guest
    text = ruleset(rs).get("text")
    upload = elements(text, "upload_limits", "bridge")
    assert len(upload) == 1
    port, _, limit = upload[0].partition(" : ")
    assert port == f'"{web}"'
    name = limit.strip('"')
    assert limits(text)[name].startswith("rate over 2500000 bytes/second")  # from the guest
    # a guarded port's frame meets the limit at the end of its checks, another port's in prerouting
    c = chains(text)
    for name in ("prerouting", "guard_arp", "guard_ip_fixed", "guard_ip_dhcp", "guard_ip_free", "guard_ip6"):
        assert c[("bridge", name)][-1] == "limit name iifname map @upload_limits drop", name
    # without a rate there is no limit to pass
    plain = text_of(doc(endpoints={"web": WEB}))
    assert "limit name" not in plain


def test_rate_limits_of_several_ports_are_distinct_objects():
    rs = resources(
        doc(
            endpoints={"a": {"kind": "netns", "network": "lan0", "rate": "1gbit"}, "t": {"kind": "tap", "network": "lan1", "rate": "500kbit"}},
            vms={"vm": {"disk": DISK, "nics": [{"network": "lan0", "rate": "100mbit"}]}},
        )
    )
    assert sorted(q.get("rate") for q in of_kind(rs, "qdisc")) == [500_000, 100_000_000, 1_000_000_000]
    text = ruleset(rs).get("text")
    upload = dict(e.split(" : ") for e in elements(text, "upload_limits", "bridge"))
    assert len(set(upload.values())) == 3
    got = {port.strip('"'): re.match(r"rate over (\d+) bytes/second", limits(text)[lim.strip('"')]).group(1) for port, lim in upload.items()}
    # exact bytes per second: 1gbit, 500kbit, 100mbit
    assert got == {names.veth_host(T, "a"): "125000000", names.tap(T, "t"): "62500", names.vm_tap(T, "vm", 0): "12500000"}


@pytest.mark.parametrize("rate, per_second", [("8kbit", 1000), ("1mbit", 125_000), ("100gbit", 12_500_000_000)])
def test_every_accepted_rate_renders_a_usable_limit(rate, per_second):
    text = text_of(doc(endpoints={"web": {**WEB, "rate": rate}}))
    (spec,) = limits(text).values()
    m = re.match(r"rate over (\d+) bytes/second", spec)
    assert m and int(m.group(1)) == per_second, spec


@pytest.mark.parametrize("rate", ["1kbit", "7kbit", "200gbit"])
def test_rates_outside_8kbit_to_100gbit_are_refused(rate):
    with pytest.raises(SpecError, match="rates go from 8kbit to 100gbit") as exc:
        text_of(doc(endpoints={"web": {**WEB, "rate": rate}}))
    assert [p.path for p in exc.value.problems] == ["endpoints.web.rate"]


def test_no_port_policy_no_bridge_elements():
    text = text_of(doc(endpoints={"web": {**WEB, "spoofing": "allow"}}))
    for name in ("guarded", "port_mac", "ip_guarded", "port_ip", "isolated_ports", "upload_limits"):
        assert elements(text, name, "bridge") == []
    assert limits(text) == {}


# --- scale: rules are a fixed list, only elements grow ---------------------------------------------


def _forwards(n: int) -> list[dict]:
    """`n` forwarded ports, as single ports and ranges of up to 4096 ports, tcp and udp."""
    out, left = [], n
    for proto in ("tcp", "udp"):
        port = 1024
        while left and port < 60000:
            size = min(left, 4096, 1 if len(out) < 5 else 4096)
            out.append({"proto": proto, "port": port if size == 1 else f"{port}-{port + size - 1}", "to": f"192.168.70.{10 + len(out) % 200}"})
            left -= size
            port += size
    assert left == 0
    return out


def _counts(data: dict) -> tuple[int, int, str]:
    rules = ruleset(resources(data))
    text = rules.get("text")
    return rules.get("rules"), rule_lines(text), text


def _digests(data: dict) -> tuple[str, str]:
    r = ruleset(resources(data))
    return r.get("digest"), r.get("elements")


def test_rule_count_does_not_grow_with_forwards():
    small_rules, small_lines, small = _counts(doc(nat(forwards=_forwards(10))))
    big_rules, big_lines, big = _counts(doc(nat(forwards=_forwards(10_000))))
    assert len(elements(small, "forwards")) == 10 * 3  # from the uplink, the host, the own network
    assert len(elements(big, "forwards")) == 10_000 * 3
    assert small_rules == small_lines == big_rules == big_lines
    assert chains(small) == chains(big)  # the very same rules
    # the structure digest does not move either; only the elements' digest does
    (small_digest, small_elements), (big_digest, big_elements) = _digests(doc(nat(forwards=_forwards(10)))), _digests(
        doc(nat(forwards=_forwards(10_000)))
    )
    assert small_digest == big_digest and small_elements != big_elements


def _networks(n: int) -> dict:
    modes = ["nat", "host", "isolated"]
    nets = {}
    for i in range(n):
        mode = modes[i % 3]
        nets[f"n{i}"] = {"mode": mode, "subnet": f"10.{i}.0.0/24", **({"uplink": "eth0"} if mode == "nat" else {})}
        if mode == "nat":
            nets[f"n{i}"]["forwards"] = [{"port": 10000 + i, "to": f"10.{i}.0.10"}]
    return nets


def _scaled(n: int, rate: bool = True) -> dict:
    nets = _networks(n)
    routed = [k for k, v in nets.items() if v["mode"] != "isolated"]
    allow = [{"from": a, "to": b, "proto": "tcp", "ports": [80, "8000-8010"]} for a, b in zip(routed, routed[1:])]
    allow += [{"from": b, "to": a} for a, b in zip(routed, routed[1:])]
    endpoints = {
        f"e{i}": {"kind": "netns", "network": k, "address": f"10.{i}.0.10/24", "isolated": i % 2 == 0, **({"rate": "10mbit"} if rate else {})}
        for i, k in enumerate(nets)
    }
    return {"name": T, "networks": nets, "endpoints": endpoints, "allow": allow}


def test_rule_count_does_not_grow_with_networks_allows_and_ports():
    small_rules, small_lines, small = _counts(_scaled(2))
    big_rules, big_lines, big = _counts(_scaled(50))
    assert (len(elements(small, "bridges")), len(elements(big, "bridges"))) == (2, 50)
    assert len(elements(big, "allowed")) > len(elements(small, "allowed"))
    assert len(elements(big, "guarded", "bridge")) == 50
    assert len(limits(big)) == 50
    assert small_rules == small_lines == big_rules == big_lines
    assert chains(small) == chains(big)
    # the structure digest stays too, except for the `limit` objects, one per rate-limited port
    assert _digests(_scaled(2, rate=False))[0] == _digests(_scaled(50, rate=False))[0]


def test_scale_elements_are_consistent():
    text = _counts(_scaled(50))[2]
    # every nat network masquerades to the uplink, every network has its intra pair
    nets = _networks(50)
    assert len(elements(text, "masq")) == sum(v["mode"] == "nat" for v in nets.values())
    assert len(elements(text, "intra")) == 50
    assert len(elements(text, "isolated_bridges")) == sum(v["mode"] == "isolated" for v in nets.values())
    # no subnet is masqueraded twice and every masqueraded subnet is a declared one
    subnets = [e.split(" . ")[0] for e in elements(text, "masq")]
    assert len(subnets) == len(set(subnets))
    assert {str(ipaddress.IPv4Network(s)) for s in subnets} <= {v["subnet"] for v in nets.values()}
