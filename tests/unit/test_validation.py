"""Validation as a user meets it: every problem in one run, in the file's terms, with hints;
values no network can use refused; hostile numbers and keys handled without a traceback."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnet import spec
from vnet.errors import ClashError, Problem, SpecError
from vnet.spec import load_text
from vnet.spec.validate import overlapping


def problems(text: str) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        load_text(text)
    return info.value.problems


def said(text: str) -> list[str]:
    return [str(p) for p in problems(text)]


PYDANTIC_WORDS = re.compile(r"Input should|Input tag|discriminator|union|Field required|Extra inputs|pydantic|\[key\]|\.str\b|\.int\b")


# --- every problem in one run ---------------------------------------------------------------------


def test_a_schema_problem_does_not_hide_an_overlap():
    ps = problems(
        "name: t\nnetworks:\n  a: {mode: host, subnet: 10.0.0.0/24, bridge: abcdefghijklmnopq}\n"
        "  b: {mode: host, subnet: 10.0.0.0/25}\n"
    )
    assert [p.path for p in ps] == ["networks.a.bridge", "networks.b.subnet"]


def test_relations_of_the_rest_are_checked_around_a_broken_entry():
    ps = problems(
        "name: t\nnetworks:\n  a: {mode: natt, subnet: 10.0.0.0/24}\n  b: {mode: host, subnet: 10.1.0.0/24}\n"
        "endpoints:\n  c1: {kind: netns, network: a}\n  c2: {kind: netns, network: b, address: 10.9.0.5/24}\n"
        "  c3: {kind: netns, network: nowhere}\n"
    )
    paths = [p.path for p in ps]
    # a is broken: c1's reference to it is not "no network named a"; the rest is still checked
    assert paths == ["networks.a.mode", "endpoints.c2.address", "endpoints.c3.network"]


def test_a_broken_field_with_a_default_keeps_its_entry_checked():
    ps = problems(
        "name: t\nnetworks:\n  a: {mode: host, subnet: 10.0.0.0/24, dhcp: {lease: 5s}}\n"
        "endpoints:\n  c: {kind: netns, network: a, address: 10.0.0.1/24, mac: 'zz'}\n"
    )
    assert [p.path for p in ps] == ["networks.a.dhcp.lease", "endpoints.c.mac", "endpoints.c.address"]
    assert "gateway" in ps[2].message


# --- values no network can use --------------------------------------------------------------------


@pytest.mark.parametrize(
    "subnet, what",
    [
        ("127.0.0.0/24", "loopback"),
        ("224.0.0.0/24", "multicast"),
        ("239.1.0.0/16", "multicast"),
        ("169.254.1.0/24", "link-local"),
        ("240.0.0.0/24", "class E"),
        ("255.255.255.0/30", "class E"),
        ("0.0.0.0/24", "this network"),
        ("0.0.0.0/1", "this network"),
        ("128.0.0.0/1", "link-local"),
    ],
)
def test_reserved_subnets_are_refused(subnet, what):
    ps = problems(f"name: t\nnetworks:\n  a: {{mode: host, subnet: {subnet}}}\n")
    assert [p.path for p in ps] == ["networks.a.subnet"]
    assert what in ps[0].message and "private range" in ps[0].message


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_reserved_ranges_are_refused_exactly_where_ipaddress_sees_an_overlap(address, prefixlen):
    from vnet.spec.models import _RESERVED, _usable

    net = ipaddress.IPv4Network((address, prefixlen), strict=False)
    overlapping_one = next((what for reserved, what in _RESERVED if net.overlaps(reserved)), None)
    try:
        _usable(net)
        refused = None
    except ValueError as exc:
        refused = str(exc)
    assert refused == (None if overlapping_one is None else f"{net} is not usable: {overlapping_one}; use a private range such as 10.x, 172.16-31.x or 192.168.x")


def _as_ipaddress_reads(text: str) -> tuple:
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError as exc:
        return ("refused", str(exc))
    return (str(iface), iface.ip, iface.network, iface.network.netmask)


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.text("0123456789./ +-_", max_size=20),
    st.tuples(st.integers(0, 300), st.integers(0, 300), st.integers(0, 300), st.integers(0, 300), st.integers(0, 40),
              st.sampled_from(["", "0", "00", "+", "-", " "])).map(lambda t: f"{t[5]}{t[0]}.{t[1]}.{t[2]}.{t[3]}/{t[5]}{t[4]}"),
))
def test_an_interface_read_quickly_is_the_one_ipaddress_reads(text):
    from vnet.spec.models import _ipv4_interface

    try:
        iface = _ipv4_interface(text)
        ours = (str(iface), iface.ip, iface.network, iface.network.netmask)
    except ValueError as exc:
        ours = ("refused", str(exc))
    assert ours == _as_ipaddress_reads(text)


def test_a_tun_address_in_loopback_is_refused():
    assert [p.path for p in problems("name: t\nendpoints:\n  t1: {kind: tun, address: 127.0.0.2/24}\n")] == ["endpoints.t1.address"]


@pytest.mark.parametrize("subnet", ["10.0.0.0/24", "172.16.0.0/12", "192.168.1.0/24", "100.64.0.0/10", "203.0.113.0/24"])
def test_ordinary_subnets_still_load(subnet):
    load_text(f"name: t\nnetworks:\n  a: {{mode: host, subnet: {subnet}}}\n")


@pytest.mark.parametrize("uid", ["4294967295", "4294967296", "99999999999999999999"])
def test_ids_outside_the_32_bit_range_are_refused(uid):
    ps = problems(f"name: t\nendpoints:\n  e: {{kind: tap, owner: {uid}}}\n")
    assert [p.path for p in ps] == ["endpoints.e.owner"]


def test_the_largest_valid_id_loads():
    assert load_text("name: t\nendpoints:\n  e: {kind: tap, owner: 4294967294, group: 0}\n").endpoints["e"].owner == "4294967294"


@pytest.mark.parametrize("field", ["kernel", "initrd", "disk", "append"])
def test_nul_bytes_are_refused(field):
    extra = "kernel: /boot/vmlinuz, " if field in ("initrd", "append") else ""
    ps = problems(f'name: t\nnetworks: {{n: {{mode: isolated}}}}\nvms:\n  v: {{{extra}{field}: "/a\\0b", nics: [{{network: n}}]}}\n')
    assert [p for p in ps if p.path == f"vms.v.{field}" and "NUL" in p.message]


@pytest.mark.parametrize("memory", ["1M", "15M", "1025G", "9999999G"])
def test_absurd_memory_sizes_are_refused(memory):
    ps = problems(f"name: t\nnetworks: {{n: {{mode: isolated}}}}\nvms:\n  v: {{image: tiny, memory: {memory}, nics: [{{network: n}}]}}\n")
    assert [p.path for p in ps] == ["vms.v.memory"]


@pytest.mark.parametrize("memory", ["16M", "256M", "1024G"])
def test_memory_sizes_in_range_load(memory):
    load_text(f"name: t\nnetworks: {{n: {{mode: isolated}}}}\nvms:\n  v: {{image: tiny, memory: {memory}, nics: [{{network: n}}]}}\n")


@pytest.mark.parametrize(
    "value",
    ["1" * 5000, "'" + "1" * 5000 + "'", "0x" + "f" * 5000, "1" * 4299],
)
def test_huge_integers_are_a_problem_not_a_traceback(value):
    ps = problems(f"name: t\nnetworks:\n  a: {{mode: isolated, mtu: {value}}}\n")
    assert len(ps) == 1 and not PYDANTIC_WORDS.search(str(ps[0]))


def test_huge_port_numbers_are_a_problem_not_a_traceback():
    ps = problems(f"name: t\nnetworks:\n  a: {{mode: nat, subnet: 10.0.0.0/24, forwards: [{{port: '{'9' * 5000}', to: 10.0.0.5}}]}}\n")
    assert [p.path for p in ps] == ["networks.a.forwards.0.port"]
    assert "limit" not in ps[0].message and "1-65535" in ps[0].message  # not Python's int limit


def test_an_impossible_date_is_a_problem_not_a_traceback():
    assert [p.path for p in problems("name: 2001-13-45\n")] == ["name"]


@pytest.mark.parametrize("key", ["yes", "no", "on", "off", "true", "null", "1"])
def test_keys_are_named_as_written(key):
    ps = problems(f"name: t\nnetworks:\n  {key}: {{mode: nat}}\n")
    assert ps[0].path in (f"networks.{key}.subnet", f"networks.{key}")


def test_a_network_may_be_called_yes():
    assert list(load_text("name: t\nnetworks:\n  yes: {mode: isolated}\n").networks) == ["yes"]


# --- subnet overlaps: a sorted sweep ----------------------------------------------------------------


def test_4000_networks_are_checked_without_comparing_every_pair(monkeypatch):
    """The overlap check compares no pair of networks directly (a sorted sweep): counting calls to
    IPv4Network.overlaps, only the fixed checks per subnet (its reserved ranges) remain."""
    n = 4000
    calls = 0
    real = ipaddress.IPv4Network.overlaps

    def counted(self, other):
        nonlocal calls
        calls += 1
        if calls > 20 * n:
            raise AssertionError("overlaps() called for pairs of networks: quadratic")
        return real(self, other)

    monkeypatch.setattr(ipaddress.IPv4Network, "overlaps", counted)
    lines = ["name: big", "networks:"] + [f"  n{i}: {{mode: host, subnet: 10.{i // 256}.{i % 256}.0/24}}" for i in range(n)]
    lines += ["endpoints:", "  t: {kind: tun, address: 10.0.7.1/30}"]
    ps = problems("\n".join(lines) + "\n")
    assert [p.path for p in ps] == ["endpoints.t.address"]  # the sweep still finds the one overlap
    assert calls <= 10 * n


def brute(ranges):
    out = {}
    for i, a in enumerate(ranges):
        for j in range(i):
            if a.overlaps(ranges[j]):
                out.setdefault(i, []).append(j)
    return out


nets = st.builds(
    lambda addr, prefix: ipaddress.IPv4Network((addr, prefix), strict=False),
    st.integers(0, 2**32 - 1).map(lambda x: x & 0xFFFF00FF),  # few distinct blocks: many overlaps
    st.integers(8, 30),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(nets, max_size=25))
def test_the_sweep_finds_exactly_the_overlapping_pairs(ranges):
    assert overlapping(ranges) == brute(ranges)


def test_one_network_overlapping_many_is_one_problem_naming_some():
    lines = ["name: t", "networks:"] + [f"  n{i}: {{mode: host, subnet: 10.0.{i}.0/24}}" for i in range(6)] + ["  big: {mode: host, subnet: 10.0.0.0/16}"]
    ps = problems("\n".join(lines) + "\n")
    assert [p.path for p in ps] == ["networks.big.subnet"]
    assert "networks.n0.subnet" in ps[0].message and "and 3 more" in ps[0].message


# --- messages in the file's terms -------------------------------------------------------------------


def test_an_unknown_kind_is_named_with_its_choices():
    assert said("name: t\nendpoints:\n  x: {kind: tapp}\n") == ["endpoints.x.kind: 'tapp' is not a kind — did you mean `tap`? use kind: tap, tun, netns or macvlan"]


def test_a_missing_kind():
    assert said("name: t\nendpoints:\n  x: {network: n}\n") == ["endpoints.x.kind: is required — add kind: tap, tun or netns"]


def test_a_misspelled_key_gets_a_did_you_mean():
    ps = problems("name: t\nnetworks:\n  a: {mode: host, subnte: 10.0.0.0/24}\n")
    assert "networks.a.subnte: unknown key — did you mean `subnet`?" in [str(p) for p in ps]


def test_a_key_of_another_kind_says_which_kinds_take_it():
    ps = problems("name: t\nnetworks: {n: {mode: isolated}}\nendpoints:\n  x: {kind: tun, network: n}\n")
    assert [str(p) for p in ps] == [
        "endpoints.x.network: a tun endpoint takes no `network:`; tap and netns endpoints do — remove it, or use kind: tap or netns"
    ]


def test_a_key_one_level_too_high_says_where_it_goes():
    ps = problems("name: t\nnetworks:\n  a: {mode: host, subnet: 10.0.0.0/24, lease: 1h}\n")
    assert [str(p) for p in ps] == ["networks.a.lease: unknown key — `lease` goes under `dhcp:`"]


def test_a_misspelled_choice_gets_a_did_you_mean():
    assert said("name: t\nnetworks:\n  a: {mode: natt}\n") == ["networks.a.mode: 'natt' is not one of isolated, host, nat or bridged — did you mean `nat`?"]


@pytest.mark.parametrize(
    "text",
    [
        "name: t\nendpoints:\n  x: {kind: tapp}\n",
        "name: t\nendpoints:\n  x: {kind: tap, owner: [1]}\n",
        "name: t\nnetworks: [a]\n",
        "name: t\nnetworks:\n  a: {mode: host, subnet: 10.0.0.0/24, mtu: abc}\n",
        "name: t\nnetworks:\n  a: {mode: host, subnet: 10.0.0.0/24, mtu: 10}\n",
        "name: t\nnetworks:\n  a: {mode: host, subnet: 10.0.0.0/24, dhcp: {range: [10.0.0.5]}}\n",
        "name: t\nnetworks:\n  a: {mode: host, subnet: 10.0.0.0/24, dhcp: {range: [10.0.0.5, 10.0.0.6, 10.0.0.7]}}\n",
        "name: t\nnetworks:\n  Bad: {mode: isolated}\n",
        "name: t\nendpoints:\n  x: {kind: tap, isolated: maybe}\n",
        "name: t\nnetworks:\n  a: {}\n",
        "name: [t]\n",
    ],
)
def test_no_message_speaks_pydantic(text):
    for line in said(text):
        assert not PYDANTIC_WORDS.search(line), line


def test_a_vm_and_an_endpoint_of_one_name_are_one_problem():
    ps = problems("name: t\nnetworks: {n: {mode: isolated}}\nendpoints:\n  web: {kind: tap, network: n}\nvms:\n  web: {image: tiny, nics: [{network: n}]}\n")
    assert [p.path for p in ps] == ["vms.web"]


def test_dns_names_clash_only_on_the_network_they_share():
    # web_1 and web-1 both answer to web-1 on a; the VM's second NIC (web-1) too; db_1 and db-1 are on different networks
    ps = said(
        "name: t\nnetworks:\n  a: {mode: host, subnet: 10.0.0.0/24}\n  b: {mode: host, subnet: 10.1.0.0/24}\n"
        "endpoints:\n  web_1: {kind: netns, network: a}\n  web-1: {kind: netns, network: a}\n"
        "  db_1: {kind: netns, network: a}\n  db-1: {kind: tap, network: b}\n"
        "vms:\n  web: {image: tiny, nics: [{network: b}, {network: a}]}\n"
    )
    assert ps == [
        "endpoints.web-1: its DNS name 'web-1' on networks.a is also endpoints.web_1's — rename one of them",
        "vms.web.nics.1: its DNS name 'web-1' on networks.a is also endpoints.web_1's — rename one of them",
    ]


def test_a_nic_mac_may_not_be_an_endpoints_derived_mac():
    from vnet import names

    derived = names.mac("t", "web")  # what the tap endpoint web gets, having no mac:
    text = "name: t\nnetworks: {n: {mode: isolated}}\nendpoints:\n  web: {kind: tap, network: n}\nvms:\n  vm: {image: tiny, nics: [{network: n, mac: 'MAC'}]}\n"
    assert said(text.replace("MAC", derived)) == [f"vms.vm.nics.0.mac: {derived} is also the MAC of web — MACs must be unique; omit it to get a stable unique one"]
    load_text(text.replace("MAC", "52:54:00:00:00:01"))  # control: another MAC loads


def test_a_clash_seen_by_host_checks_and_claims_is_reported_once():
    e = ClashError(
        [
            Problem("networks.n.bridge", "interface brx exists already and belongs to topology 'a'", "destroy topology a first"),
            Problem("networks.n.bridge", "bridge brx is claimed by topology 'a'", "name another bridge"),
            Problem("networks.n.subnet", "overlaps", "x"),
        ]
    )
    assert [p.path for p in e.problems] == ["networks.n.bridge", "networks.n.subnet"]
    assert "destroy" in e.problems[0].fix


def test_validate_says_host_checks_happen_at_plan():
    topo = load_text("name: t\nnetworks:\n  a: {mode: nat, subnet: 10.0.0.0/24, uplink: eth9}\n")
    line = spec.summary("t.yaml", topo)
    assert line.startswith("t.yaml: valid (1 networks, 0 endpoints, 0 VMs)") and "`vnet plan`" in line and "uplink" in line


def test_an_unknown_key_leaves_the_rest_of_its_entry_checked():
    ps = problems(
        "name: t\nnetworks:\n  a: {mode: nat, subnet: 10.0.0.0/24, lease: 1h}\n  b: {mode: host, subnet: 10.0.0.0/25}\n"
        "endpoints:\n  y: {kind: tun, network: b, address: 10.0.0.200/30}\n  gateway: {kind: netns, network: a}\n"
    )
    assert [p.path for p in ps] == ["networks.a.lease", "endpoints.y.network", "networks.b.subnet", "endpoints.y.address", "endpoints.gateway"]


def test_a_networks_addressing_is_worked_out_once_per_topology_and_never_mixed_up():
    from vnet.spec.validate import addressing
    from vnet.values import per_topology

    calls: list[tuple[int, str]] = []

    @per_topology
    def derive(topo, key):
        calls.append((id(topo), key))
        return (topo.name, key)

    a = load_text("name: a\nnetworks: {n: {mode: host, subnet: 10.0.0.0/24}}\n")
    b = load_text("name: b\nnetworks: {n: {mode: host, subnet: 10.9.0.0/24}}\n")
    assert [derive(a, "n"), derive(a, "n"), derive(a, "m"), derive(b, "n"), derive(a, "n")] == [("a", "n"), ("a", "n"), ("a", "m"), ("b", "n"), ("a", "n")]
    assert calls == [(id(a), "n"), (id(a), "m"), (id(b), "n"), (id(a), "n")]  # once per key, again after another topology
    # the same network name in two topologies, asked in turn: each its own subnet
    assert [str(addressing(t, "n").gateway) for t in (a, b, a)] == ["10.0.0.1", "10.9.0.1", "10.0.0.1"]
