"""`vnet check` against real traffic in the sandbox: examples as declared, then broken on purpose."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from vnet import check, graph, ops
from vnet.spec.validate import load_text


def run_check(world, topo):
    return ops.check(topo, netns=world.host, state_dir=world.state)


@pytest.mark.parametrize("example", ["nat.yaml", "isolated.yaml", "services.yaml", "host.yaml"])
def test_examples_are_as_declared(world, example):
    topo = world.load(example)
    world.apply(topo)
    report = run_check(world, topo)
    assert report.ok, [(r.src, r.dst, r.proto, r.note) for r in report.mismatches]
    probed = [r for r in report.results if r.observed is not None]
    assert probed and len(probed) == len(report.results)
    assert any(r.expected for r in probed) and (example == "services.yaml" or any(not r.expected for r in probed))
    if example != "services.yaml":  # services: c2 has no address (no DHCP client runs in it)
        assert "@outside" in report.peers
    assert all(m["reached"] for m in report.mtu) and report.mtu
    assert report.seconds < 10


def test_forwards_allow_and_isolation_as_declared(world):
    """forwards.yaml: forwards from outside and by hairpin, an allow: rule between networks, an
    isolated port that reaches neither its neighbours nor the forwards."""
    topo = world.load("forwards.yaml")
    world.apply(topo)
    report = run_check(world, topo)
    assert report.ok, [(r.src, r.dst, r.proto, r.note) for r in report.mismatches]
    got = {(r.src, r.dst, r.proto): r for r in report.results}
    assert got[("@outside", "fwd.lan0.0", "tcp")].observed is True
    assert got[("peer", "back", "tcp")].observed is True and got[("peer", "back", "tcp")].port == 80
    assert got[("back", "peer", "tcp")].observed is False
    assert got[("peer", "lone", "icmp")].observed is False
    # from another network the host resets the forward's port: the forward did not take it
    assert got[("back", "fwd.lan0.0", "tcp")].observed is False


def test_broken_ruleset_and_route_are_reported_with_the_setting_that_decides(world):
    topo = world.load("nat.yaml")
    world.apply(topo)
    assert run_check(world, topo).ok
    # someone flushes vnet's firewall: the internet now reaches in, the file says it must not
    subprocess.run(["ip", "netns", "exec", world.host, "nft", "delete", "table", "inet", "vnet-lab"], check=True)
    report = run_check(world, topo)
    assert not report.ok
    wrong = {(r.src, r.dst, r.proto): r for r in report.mismatches}
    r = wrong[("@outside", "c1", "tcp")]
    assert r.expected is False and r.observed is True and r.reason.startswith("networks.lan0.mode: nat")
    # the live graph shows what is missing
    live = ops.graph(topo, "mermaid", live=True, netns=world.host, state_dir=world.state)
    assert graph.COLOURS["missing"] in live and "not in sync" in live
    # and the command line says so: exit 1, the mismatch in the JSON
    out = _cli(world, "nat.yaml")
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert data["ok"] is False and any(m["src"] == "@outside" and m["dst"] == "c1" for m in data["mismatches"])
    # apply repairs it; then a route removed inside an endpoint cuts it off from the outside
    world.apply(topo)
    assert _cli(world, "nat.yaml").returncode == 0
    subprocess.run(["ip", "-n", "lab-c1", "route", "del", "default"], check=True)
    report = run_check(world, topo)
    wrong = {(r.src, r.dst, r.proto) for r in report.mismatches}
    assert {("c1", "@outside", p) for p in ("icmp", "tcp", "udp")} <= wrong
    assert ("c1", "c2", "icmp") not in wrong  # its own network is still switched


def _cli(world, example: str) -> subprocess.CompletedProcess:
    from tests.integration.conftest import EXAMPLES

    return subprocess.run([sys.executable, "-m", "vnet.check", str(EXAMPLES / example), "--netns", world.host,
                           "--state-dir", str(world.state), "-o", "json"], capture_output=True, text=True, timeout=120)


def test_fifty_endpoints_in_under_30_seconds(world):
    """50 endpoints in five networks of ten (nat and host, with allow rules between them): every
    pair, three protocols, well under 30 s. One network of 50 would need 2500 ARP entries, more
    than the kernel's shared neighbour table holds by default (1024): check warns of that."""
    nets = [f"  n{k}: {{mode: {'nat' if k % 2 == 0 else 'host'}, subnet: 10.{40 + k}.0.0/24, uplink: eth0}}"
            if k % 2 == 0 else f"  n{k}: {{mode: host, subnet: 10.{40 + k}.0.0/24}}" for k in range(5)]
    eps = [f"  e{i}: {{kind: netns, network: n{i // 10}, address: 10.{40 + i // 10}.0.{10 + i}/24}}" for i in range(50)]
    topo = load_text("name: fifty\nnetworks:\n" + "\n".join(nets) + "\nendpoints:\n" + "\n".join(eps)
                     + "\nallow: [{from: n0, to: n1, proto: tcp}, {from: n2, to: n3}]\n")
    world.apply(topo)
    t0 = time.monotonic()
    report = run_check(world, topo)
    took = time.monotonic() - t0
    assert report.ok, [(r.src, r.dst, r.proto, r.note) for r in report.mismatches][:10]
    assert not report.warnings
    assert len(report.results) > 50 * 49 * 3
    assert sum(1 for r in report.results if r.observed) > 1000
    print(f"\n50 endpoints: {len(report.results)} probes in {took:.1f}s")
    assert took < 30
