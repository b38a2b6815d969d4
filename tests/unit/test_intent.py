"""The declared intent: which probes must pass and which must be blocked, and why. Pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from vnet import intent, spec
from vnet.spec.validate import load_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(example: str):
    return spec.load(EXAMPLES / example)


def exp(it, src, dst, proto):
    e = it.expect(src, dst, proto)
    assert e is not None, (src, dst, proto)
    return e


def test_nat_endpoints_reach_each_other_the_host_and_the_outside_but_nothing_reaches_in():
    it = intent.intent(load("nat.yaml"))
    for proto in intent.PROTOS:
        assert exp(it, "c1", "c2", proto).reachable
        assert exp(it, "c1", "gw.lan0", proto).reachable
        assert exp(it, "c1", "@outside", proto).reachable
        assert exp(it, "@host", "c1", proto).reachable
        blocked = exp(it, "@outside", "c1", proto)
        assert not blocked.reachable and "networks.lan0.mode: nat" in blocked.reason
    # taps without a guest and tun devices cannot answer: skipped, with the reason
    assert {w for w, _ in it.skipped} == {"endpoints.vm1", "endpoints.vm2", "endpoints.vpn"}
    assert [(m.network, m.src, m.dst, m.mtu) for m in it.mtu] == [("lan0", "c1", "gw.lan0", 1500)]


def test_isolated_mode_reaches_only_its_own_endpoints():
    it = intent.intent(load("isolated.yaml"))
    assert "gw.lab" not in it.peers  # the host has no address there
    assert exp(it, "a", "b", "tcp").reachable
    for dst in ("@host", "@outside"):
        e = exp(it, "a", dst, "icmp")
        assert not e.reachable and "isolated" in e.reason
    assert not exp(it, "@host", "a", "udp").reachable
    assert [(m.src, m.dst) for m in it.mtu] == [("a", "b")]  # no gateway: endpoint to endpoint


def test_host_mode_reaches_the_host_and_no_further():
    it = intent.intent(load("host.yaml"))
    assert exp(it, "a", "gw.lab", "tcp").reachable
    assert exp(it, "a", "@host", "icmp").reachable
    e = exp(it, "a", "@outside", "udp")
    assert not e.reachable and e.reason.startswith("networks.lab.mode: host")


def test_outside_is_left_out_when_there_is_none():
    it = intent.intent(load("nat.yaml"), outside=False)
    assert "@outside" not in it.peers
    assert all("@outside" not in (e.src, e.dst) for e in it.expects)


def test_port_isolation_allow_rules_and_forwards():
    it = intent.intent(load("forwards.yaml"))
    e = exp(it, "peer", "lone", "icmp")
    assert not e.reachable and e.reason.startswith("endpoints.lone.isolated: true")
    assert not exp(it, "lone", "web", "tcp").reachable
    assert exp(it, "lone", "gw.lan0", "tcp").reachable  # the gateway still answers an isolated port
    assert exp(it, "lone", "@outside", "icmp").reachable  # and through it the outside
    # allow: lan0 → lan1 tcp 80 only; the probe uses the allowed port, and only one way
    allowed = exp(it, "peer", "back", "tcp")
    assert allowed.reachable and allowed.port == 80 and allowed.reason.startswith("allow.0")
    assert not exp(it, "peer", "back", "icmp").reachable
    assert not exp(it, "peer", "back", "udp").reachable
    back = exp(it, "back", "peer", "tcp")
    assert not back.reachable and "no allow: rule from lan1 to lan0" in back.reason
    # an isolated port reaches no other network either, though an allow: rule names its network
    across = exp(it, "lone", "back", "tcp")
    assert not across.reachable and across.reason.startswith("endpoints.lone.isolated: true")
    # a forward is published to its own network and the uplink, not to another vnet network
    assert not exp(it, "back", "fwd.lan0.0", "tcp").reachable
    # forwards: from the outside, the host, and hairpin from inside; the udp range by address
    fwd = it.peers["fwd.lan0.0"]
    assert (fwd.proto, fwd.port, fwd.target, fwd.target_port) == ("tcp", 8080, "web", 80)
    assert (it.peers["fwd.lan0.1"].target, it.peers["fwd.lan0.1"].target_port) == ("sink", 5000)
    assert exp(it, "@outside", "fwd.lan0.0", "tcp").reason.startswith("networks.lan0.forwards.0")
    assert exp(it, "@host", "fwd.lan0.1", "udp").reachable
    assert exp(it, "peer", "fwd.lan0.0", "tcp").reachable
    assert it.expect("@outside", "fwd.lan0.0", "udp") is None  # a forward is probed with its own protocol
    assert it.expect("web", "fwd.lan0.0", "tcp") is None  # nor from its own target
    assert not exp(it, "@outside", "back", "tcp").reachable


def test_probe_port_avoids_forwarded_and_allowed_ports():
    topo = load_text(f"""
name: pp
networks:
  a: {{mode: nat, subnet: 10.1.0.0/24, uplink: eth0,
      forwards: [{{proto: tcp, port: {intent.PROBE_PORT}-{intent.PROBE_PORT + 1}, to: 10.1.0.5}}]}}
  b: {{mode: host, subnet: 10.2.0.0/24}}
allow: [{{from: a, to: b, proto: udp, ports: [{intent.PROBE_PORT + 2}]}}]
""")
    assert intent.probe_port(topo) == intent.PROBE_PORT + 3
    it = intent.intent(topo)
    assert it.skipped == [("networks.a.forwards.0", "forwards to 10.1.0.5, which no endpoint or VM of the file has")]


def test_vm_nics_networks_mtu_and_isolated_nics():
    topo = load_text("""
name: vmx
networks:
  a: {mode: nat, subnet: 10.1.0.0/24, uplink: eth0, mtu: 1400, dhcp: true}
  b: {mode: isolated, subnet: 10.2.0.0/24}
endpoints:
  c: {kind: netns, network: a, address: 10.1.0.10/24}
vms:
  w: {image: tiny, nics: [{network: a, address: 10.1.0.20}, {network: b, isolated: true}]}
  s: {image: tiny, nics: [{network: b}]}
""")
    it = intent.intent(topo)
    assert it.peers["w.0"].address == "10.1.0.20" and it.peers["w.1"].isolated
    assert exp(it, "c", "w.0", "icmp").reachable
    assert not exp(it, "s", "w.1", "icmp").reachable  # an isolated NIC
    e = exp(it, "c", "s", "tcp")
    assert not e.reachable and e.reason.startswith("networks.b.mode: isolated")
    mtu = {m.network: m for m in it.mtu}
    assert mtu["a"].mtu == 1400 and mtu["a"].reason == "networks.a.mtu: 1400"
    assert "b" not in mtu  # s and the isolated NIC of w cannot reach each other: no pair to probe


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_expectation_names_a_setting(example):
    it = intent.intent(load(example))
    for e in it.expects:
        assert e.src in it.peers and e.dst in it.peers
        assert e.reason and ("networks." in e.reason or "endpoints." in e.reason or "allow" in e.reason
                             or "vms." in e.reason or "gw." in e.reason), e
        assert (e.port is None) == (e.proto == "icmp")
