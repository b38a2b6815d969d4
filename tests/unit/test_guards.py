"""The guards as rendered (golden file of examples/guards.yaml), their fixed size, and DHCP
snooping's handling of what dnsmasq passes it."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest

from vnet import dnsconf, names, nftrules, snoop, spec
from vnet.facts import HostFacts

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden") / "guards.nft"
FACTS = HostFacts(default_uplink="eth0")


def _render(text: str | None = None):
    topo = spec.load_text(text) if text is not None else spec.load(ROOT / "examples" / "guards.yaml")
    return nftrules.render(topo, FACTS)


def test_golden_ruleset_of_the_guards_example():
    got = _render().text
    if os.environ.get("VNET_UPDATE_GOLDEN"):
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text(), "rendered ruleset changed; VNET_UPDATE_GOLDEN=1 rewrites tests/unit/golden/guards.nft"


def test_link_local_is_the_eui64_of_the_mac():
    assert str(nftrules.link_local("52:54:00:12:34:56")) == "fe80::5054:ff:fe12:3456"
    assert str(nftrules.link_local("02:00:00:00:00:01")) == "fe80::ff:fe00:1"


def _topology(n_ports: int, n_forwards: int, dhcp: bool = True) -> str:
    lines = ["name: big", "networks:", "  lan:", "    mode: nat", "    subnet: 10.50.0.0/16", "    uplink: eth0"]
    if dhcp:
        lines.append("    dhcp: {lease: 1h}")
    if n_forwards:
        lines.append("    forwards:")
        lines += [f"      - {{proto: tcp, port: {2000 + i}, to: \"e0:80\"}}" for i in range(n_forwards)]
    lines += ["  other: {mode: host, subnet: 10.60.0.0/24}", "endpoints:"]
    lines.append("  e0: {kind: netns, network: lan, address: 10.50.0.10/16}")
    for i in range(1, n_ports):
        lines.append(f"  e{i}: {{kind: netns, network: lan}}" if i % 2 else f"  e{i}: {{kind: netns, network: lan, address: 10.50.{i // 250 + 1}.{i % 250 + 1}/16, isolated: true}}")
    lines.append("allow:\n  - {from: other, to: lan, proto: tcp, ports: [80]}")
    return "\n".join(lines) + "\n"


def test_rules_do_not_grow_with_ports_or_forwards():
    small, big = _render(_topology(3, 1)), _render(_topology(300, 200))
    assert small.rules == big.rules
    assert small.digest == big.digest  # the same structure: only elements differ
    assert len(big.text) > 10 * len(small.text)


def test_every_guarded_port_has_its_link_local_address_and_mac_for_nd():
    text = _render().text
    _, sets = nftrules.parse(text)
    topo = spec.load(ROOT / "examples" / "guards.yaml")
    from vnet.facts import ports

    for port in ports(topo):
        ll = nftrules.link_local(port.mac)
        if port.spoofing == "deny":
            assert f'"{port.ifname}" . {ll}' in sets[("bridge", "port_ip6")]
            assert f'"{port.ifname}" . 0x{int(ll):032x}' in sets[("bridge", "nd_target")]
        else:
            assert not any(port.ifname in e for e in sets[("bridge", "port_ip6")])
    # no network there has subnet6: a port's own link-local address is all it may use
    assert sets[("bridge", "free6_guarded")] == []
    # the DHCP port is snooped, the fixed ones are held to their address, none is "free"
    assert sets[("bridge", "dhcp_guarded")] == [f'"{names.veth_host("grd", "evil")}"']
    assert sets[("bridge", "free_guarded")] == []
    assert "192.168.80.1" in sets[("bridge", "reserved_ip")]


FAST_PATH = "meta l4proto tcp ether type ip meta protocol ip iifname . ether saddr . ip saddr @fixed_ok accept"
FAST_PATH6 = "meta l4proto tcp ether type ip6 meta protocol ip6 iifname . ether saddr . ip6 saddr @fixed6_ok accept"


def _bridge_chains(text: str) -> dict[str, list[str]]:
    out, name = {}, None
    for line in text.split("table bridge ", 1)[1].splitlines():
        if line.startswith("  chain "):
            name = line.split()[1]
            out[name] = []
        elif line == "  }":
            name = None
        elif name is not None and not line.strip().startswith("type "):
            out[name].append(line.strip())
    return out


def test_guard_order_tags_before_address_checks():
    """A guarded port's frame from its own MAC goes to the checks of its kind of port, where only an
    untagged ARP, IPv4 or IPv6 frame, whose type the kernel agrees with, goes on to the address
    checks of its protocol; anything else is dropped (CVE-2021-27853), and so is a frame of a guarded
    port from another MAC. No address check is reached another way."""
    c = _bridge_chains(_render().text)
    assert c["prerouting"][:4] == [FAST_PATH, FAST_PATH6, "iifname . ether saddr vmap @guard_ports", f"iifname @guarded {nftrules.COUNT_GUARD_DROP} drop"]
    kinds = ("fixed", "dhcp", "free")
    for kind in kinds:
        assert c[f"guard_{kind}"] == [
            f"ether type . meta protocol vmap {{ arp . arp : goto guard_arp, ip . ip : goto guard_ip_{kind}, ip6 . ip6 : goto guard_ip6 }}",
            f"{nftrules.COUNT_GUARD_DROP} drop",
        ]
    # the fast path only accepts (what it accepts passes every check: test_fast_path_...)
    address_checks = [n for n, rules in c.items() if any(("saddr ip" in r or "ip saddr" in r or "ip6 saddr" in r) and r not in (FAST_PATH, FAST_PATH6) for r in rules)]
    assert sorted(address_checks) == sorted(["guard_arp", "guard_ip6", *(f"guard_ip_{k}" for k in kinds)])
    jumps = [r for rules in c.values() for r in rules if "jump" in r or "goto" in r or "vmap" in r]
    assert jumps == [c["prerouting"][2], *(c[f"guard_{k}"][0] for k in kinds)]
    # every guard drops, and counts the drop for its port (the example has no upload rate)
    assert not any("limit name" in r for rules in c.values() for r in rules)
    for name in (*(f"guard_{k}" for k in kinds), "guard_arp", "guard_ip6", *(f"guard_ip_{k}" for k in kinds)):
        assert all(r.endswith(f"{nftrules.COUNT_GUARD_DROP} drop") for r in c[name] if "vmap" not in r), name


def test_fast_path_takes_only_what_the_checks_of_a_fixed_port_let_through():
    """The fast path accepts TCP from a port with a fixed IPv4 address and no upload rate, by its
    port, own MAC and own address, untagged: exactly the frames guard_fixed and guard_ip_fixed let
    through untouched (for IPv6 those guard_ip6 lets through). A port with an upload rate is not in it (its frames must meet the limit at
    the end of the checks), nor a DHCP or a free port (their addresses are not fixed)."""
    text = _render(FAST).text
    _, sets = nftrules.parse(text)
    web, slow, dyn = (f'"{names.veth_host("fp", n)}"' for n in ("web", "slow", "dyn"))
    assert [e.split(" . ")[0] for e in sets[("bridge", "fixed_ok")]] == [web]
    assert web in sets[("bridge", "ip_guarded")] and slow in sets[("bridge", "ip_guarded")]
    assert dyn in sets[("bridge", "dhcp_guarded")]
    for e in sets[("bridge", "fixed_ok")]:
        port, mac, addr = e.split(" . ")
        assert f"{port} . {mac}" in sets[("bridge", "port_mac")] and f"{port} . {addr}" in sets[("bridge", "port_ip")]
        assert f"{port} . {mac} : goto guard_fixed" in sets[("bridge", "guard_ports")]
    # for IPv6, every port whose IPv6 addresses vnet knows (here its link-local), whatever its IPv4
    # kind, and again none with an upload rate: guard_ip6 lets TCP from those addresses through
    six = sets[("bridge", "fixed6_ok")]
    assert sorted(e.split(" . ")[0] for e in six) == sorted([web, dyn])
    for e in six:
        port, mac, addr = e.split(" . ")
        assert f"{port} . {addr}" in sets[("bridge", "port_ip6")] and port in sets[("bridge", "ip6_guarded")]
        assert f"{port} . {mac}" in sets[("bridge", "port_mac")]
    c = _bridge_chains(text)
    assert c["prerouting"][:2] == [FAST_PATH, FAST_PATH6]
    # what guard_ip_fixed checks: a TCP frame from the port's own address meets none of its drops
    assert c["guard_ip_fixed"][:3] == [
        f"udp sport {{ 67, 547 }} {nftrules.COUNT_GUARD_DROP} drop",
        f"ip saddr 0.0.0.0 meta l4proto . th dport != {{ udp . 67 }} {nftrules.COUNT_GUARD_DROP} drop",
        f"ip saddr != 0.0.0.0 iifname . ip saddr != @port_ip {nftrules.COUNT_GUARD_DROP} drop",
    ]
    assert c["guard_ip_fixed"][3:] == ["limit name iifname map @upload_limits drop"]


FAST = """
name: fp
networks:
  lan: {mode: nat, subnet: 10.9.0.0/24, uplink: eth0, dhcp: true}
endpoints:
  web: {kind: netns, network: lan, address: 10.9.0.10/24}
  slow: {kind: netns, network: lan, address: 10.9.0.11/24, rate: 10mbit}
  dyn: {kind: netns, network: lan}
  loose: {kind: netns, network: lan, address: 10.9.0.12/24, spoofing: allow}
"""


def test_chains_a_topology_does_not_need_are_left_out():
    """A frame pays for every base chain on its way, rules or none: the output chain (DHCP
    snooping of the host's dnsmasq) is there only with a DHCP-guarded port, the forward chain
    (port isolation) only with an isolated port, the fast path only with a port it serves."""
    fixed = "name: fx\nnetworks:\n  lan: {mode: nat, subnet: 10.9.0.0/24, uplink: eth0}\nendpoints:\n  web: {kind: netns, network: lan, address: 10.9.0.10/24}\n"
    c = _bridge_chains(_render(fixed).text)
    assert "output" not in c and "forward" not in c
    assert c["prerouting"] == [FAST_PATH, FAST_PATH6, "iifname . ether saddr vmap @guard_ports", f"iifname @guarded {nftrules.COUNT_GUARD_DROP} drop"]
    c = _render(fixed.replace("10.9.0.10/24}", "10.9.0.10/24, isolated: true}")).text
    assert _bridge_chains(c)["forward"] == ["iifname @isolated_ports oifname != @service_ports drop", "oifname @isolated_ports iifname != @service_ports drop"]
    c = _bridge_chains(_render(fixed.replace("uplink: eth0}", "uplink: eth0, dhcp: true}") + "  dyn: {kind: netns, network: lan}\n").text)
    assert c["output"] == [nftrules.LEARN]
    # a DHCP network whose ports all have fixed addresses: nothing reads the leases, none is learned
    c = _bridge_chains(_render(fixed.replace("uplink: eth0}", "uplink: eth0, dhcp: true}")).text)
    assert "output" not in c
    # no guarded port at all (spoofing: allow): no guard rules, no fast path, no base chain
    c = _bridge_chains(_render(fixed.replace("10.9.0.10/24}", "10.9.0.10/24, spoofing: allow}")).text)
    assert c == {name: rules for name, rules in c.items() if name not in ("prerouting", "forward", "output")}


def test_guard_ports_map_each_port_to_its_kind():
    """Each guarded port with its own MAC maps to the checks of its kind: a fixed address, a DHCP
    lease from vnet's dnsmasq, or an address vnet does not know."""
    text = _render().text
    _, sets = nftrules.parse(text)
    guarded = sets[("bridge", "guarded")]
    targets = {e.split(" . ")[0]: e.rsplit(" : ", 1)[1] for e in sets[("bridge", "guard_ports")]}
    assert sorted(targets) == sorted(guarded)
    for port, target in targets.items():
        kind = "fixed" if port in sets[("bridge", "ip_guarded")] else "dhcp" if port in sets[("bridge", "dhcp_guarded")] else "free"
        assert port in sets[("bridge", f"{kind}_guarded" if kind != "fixed" else "ip_guarded")]
        assert target == f"goto guard_{kind}"
    for e in sets[("bridge", "guard_ports")]:
        port_mac = e.rsplit(" : ", 1)[0]
        assert port_mac in sets[("bridge", "port_mac")]


def test_forwards_are_published_per_way_in():
    text = _render(_topology(3, 1)).text
    _, sets = nftrules.parse(text)
    ways = sorted({e.split(" . ")[0] for e in sets[("inet", "forwards")]})
    # the uplink, the host itself, the own network, and `other` because an allow: rule names it
    assert len(ways) == 4 and '"eth0"' in ways and '"lo"' in ways


def test_dnsmasq_runs_the_lease_script_from_the_state_directory(tmp_path):
    topo = spec.load(ROOT / "examples" / "guards.yaml")
    conf = dnsconf.render(topo, "lan", "br", "", [], tmp_path)
    assert f"dhcp-script={tmp_path / 'dhcp-event-lan'}" in conf.splitlines()


# --- snoop --------------------------------------------------------------------------------------


def test_script_runs_vnets_interpreter_isolated_with_fixed_arguments():
    text = snoop.script_text("t1-host", "vnet-grd", "/opt/vnet/bin/python")
    assert text.splitlines()[-1] == 'exec /opt/vnet/bin/python -I -m vnet.snoop t1-host vnet-grd "$@"'
    assert "-m vnet.snoop - vnet-grd" in snoop.script_text(None, "vnet-grd", "/p")


@pytest.mark.parametrize("ns, table", [("../x", "vnet-a"), ("a b", "vnet-a"), ("ok", "vnet-a; flush ruleset"), ("ok", "other")])
def test_script_refuses_names_it_could_not_quote(ns, table):
    with pytest.raises(snoop.Invalid):
        snoop.script_text(ns, table)


def test_lease_commands_refresh_the_timeout_and_delete():
    add = snoop.commands("vnet-grd", "add", "52:54:00:AA:BB:CC", "192.168.80.100", expires=1120, now=1000)
    lines = add.splitlines()
    assert lines[0] == "add element bridge vnet-grd leased { 0x525400aabbcc . 0xc0a85064 }"
    assert lines[1].startswith("delete element")
    assert lines[2] == "add element bridge vnet-grd leased { 0x525400aabbcc . 0xc0a85064 timeout 120s }"
    assert len(snoop.commands("vnet-grd", "del", "52:54:00:aa:bb:cc", "192.168.80.100", 0, 1000).splitlines()) == 2
    assert len(snoop.commands("vnet-grd", "old", "52:54:00:aa:bb:cc", "192.168.80.100", 900, 1000).splitlines()) == 2  # expired
    assert "timeout" not in snoop.commands("vnet-grd", "add", "52:54:00:aa:bb:cc", "192.168.80.100", 0, 1000)  # infinite


@pytest.mark.parametrize(
    "argv, env",
    [
        (["-", "vnet-grd", "add", "52:54:00:aa:bb:cc", "192.168.80.100; reboot"], {"DNSMASQ_LEASE_EXPIRES": "2000"}),
        (["-", "vnet-grd", "add", "not-a-mac", "192.168.80.100"], {"DNSMASQ_LEASE_EXPIRES": "2000"}),
        (["-", "vnet-grd", "add", "52:54:00:aa:bb:cc", "192.168.80.100"], {"DNSMASQ_LEASE_EXPIRES": "12x"}),
        (["-", "vnet-grd", "add", "52:54:00:aa:bb:cc", "192.168.80.100"], {}),
        (["../etc", "vnet-grd", "add", "52:54:00:aa:bb:cc", "192.168.80.100"], {"DNSMASQ_LEASE_EXPIRES": "2000"}),
        (["-", "x } ; flush ruleset", "add", "52:54:00:aa:bb:cc", "192.168.80.100"], {"DNSMASQ_LEASE_EXPIRES": "2000"}),
        (["-", "vnet-grd", "add"], {"DNSMASQ_LEASE_EXPIRES": "2000"}),
    ],
)
def test_bad_arguments_from_dnsmasq_change_nothing(argv, env, monkeypatch):
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    assert snoop.main(argv, env) == 1
    assert ran == []


@pytest.mark.parametrize("action", ["init", "tftp", "arp-add", "arp-del"])
def test_other_events_are_ignored(action, monkeypatch):
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    assert snoop.main(["-", "vnet-grd", action, "52:54:00:aa:bb:cc", "192.168.80.100"], {}) == 0
    assert ran == []


def test_dhcpv6_leases_are_not_snooped(monkeypatch):
    ran = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    assert snoop.main(["-", "vnet-grd", "add", "00:01:00:01:2a:2b", "2001:db8::5"], {"DNSMASQ_LEASE_EXPIRES": "9"}) == 0
    assert ran == []


def test_reseed_takes_running_ipv4_leases_only(tmp_path):
    (tmp_path / "dnsmasq-lan.leases").write_text(
        "1120 52:54:00:aa:bb:cc 192.168.80.100 evil *\n"
        "900 52:54:00:aa:bb:cd 192.168.80.101 gone *\n"
        "0 52:54:00:aa:bb:ce 192.168.80.102 forever *\n"
        "duid 00:01:00:01:2a\n"
        "1120 1234 2001:db8::5 v6 00:01\n"
        "garbage\n"
    )
    got = snoop.reseed("vnet-grd", tmp_path, now=1000).splitlines()
    assert got == [
        "add element bridge vnet-grd leased { 0x525400aabbcc . 0xc0a85064 timeout 120s }",
        "add element bridge vnet-grd leased { 0x525400aabbce . 0xc0a85066 }",
    ]


def test_ipv6_port_addresses_are_known_only_where_vnet_decides_them():
    topo = spec.load_text(
        """
name: six
networks:
  slaac: {mode: nat, subnet: 10.61.0.0/24, subnet6: "fd00:61::/64"}
  leased: {mode: nat, subnet: 10.62.0.0/24, subnet6: "fd00:62::/64", dhcp6: true}
  lan: {mode: bridged, uplink: eth0}
  v4only: {mode: host, subnet: 10.63.0.0/24}
endpoints:
  fixed: {kind: netns, network: leased, address6: "fd00:62::10/64"}
  auto: {kind: netns, network: slaac}
  byd: {kind: netns, network: leased}
  out: {kind: netns, network: lan}
  v4: {kind: netns, network: v4only}
"""
    )
    from vnet.facts import ports

    by_name = {p.ifname: p for p in ports(topo)}
    got = {ep: nftrules.port_addresses6(topo, by_name[names.veth_host("six", ep)]) for ep in ("fixed", "auto", "byd", "out", "v4")}
    auto = by_name[names.veth_host("six", "auto")]
    assert got["fixed"][1] == ipaddress.IPv6Address("fd00:62::10")
    assert got["auto"] == [nftrules.link_local(auto.mac), ipaddress.IPv6Network("fd00:61::/64")[nftrules.eui64(auto.mac)]]
    assert got["v4"] == [nftrules.link_local(by_name[names.veth_host("six", "v4")].mac)]
    assert got["byd"] is None and got["out"] is None  # a DHCPv6 lease, the LAN's prefix: not vnet's to know
    reserved = nftrules._reserved6(topo, list(by_name.values()))
    assert ipaddress.IPv6Address("fd00:61::1") in reserved and ipaddress.IPv6Address("fd00:62::10") in reserved


def test_only_forward_targets_get_hairpin_ports():
    from vnet.facts import hairpin_ports

    topo = spec.load(ROOT / "examples" / "forwards.yaml")
    assert hairpin_ports(topo) == {names.endpoint_veth("fwd", "web", None), names.endpoint_veth("fwd", "sink", None)}
    assert hairpin_ports(spec.load(ROOT / "examples" / "nat.yaml")) == frozenset()


def test_hairpin_mode_is_read_from_a_ports_slave_data():
    from vnet.drivers import rtnl

    _, _, body = rtnl.set_bridge_port("ve-x", True)
    info = next(v for k, v in rtnl.attrs(body, rtnl._IFINFO.size, len(body)) if k == rtnl.IFLA_LINKINFO)
    link = rtnl.Link(1, "ve-x", 0)
    rtnl._link_info(link, info)
    assert link.data == {"hairpin": True}
