"""`vnet status --tables` against real objects: after a ping between two endpoints, the bridge's
FDB holds both endpoints' MACs on their own ports (learned), the neighbour table of the bridge
holds what the host resolved, the ports count what was sent, and a frame from a spoofed source
shows up as a guard drop on the sender's port only. `--watch` redraws a bounded number of times."""

from __future__ import annotations

import json

from vnet import check, names, spec

from .probe import wait_for
from .test_guards import eth, send

TOPO = """
name: liv
networks:
  lan: {mode: nat, subnet: 10.61.0.0/24}
endpoints:
  a: {kind: netns, network: lan, address: 10.61.0.10/24}
  b: {kind: netns, network: lan, address: 10.61.0.11/24}
"""


def _tables(world, path) -> dict:
    proc = world.vnet("status", str(path), "--tables", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    [lan] = json.loads(proc.stdout)["tables"]
    return lan


def test_tables_show_fdb_neighbours_counters_and_guard_drops(world, tmp_path):
    path = tmp_path / "liv.yaml"
    path.write_text(TOPO)
    topo = spec.load(path)
    world.apply(topo)
    a_ns, b_ns = names.endpoint_netns("liv", "a", None), names.endpoint_netns("liv", "b", None)
    assert check.ping(a_ns, "10.61.0.11", count=2)
    assert check.ping(a_ns, "10.61.0.1")  # the gateway: the host resolves a in its neighbour table

    lan = _tables(world, path)
    a_port, b_port = names.veth_host("liv", "a"), names.veth_host("liv", "b")
    a_mac, b_mac = names.mac("liv", "a"), names.mac("liv", "b")
    fdb = {(r["mac"], r["port"]): r for r in lan["fdb"]}
    assert fdb[(a_mac, a_port)]["type"] == "learned" and fdb[(a_mac, a_port)]["mac_of"] == "a"
    assert fdb[(b_mac, b_port)]["type"] == "learned" and fdb[(b_mac, b_port)]["port_of"] == "b"
    assert isinstance(fdb[(a_mac, a_port)]["age"], int)
    assert not any(r["mac"] == a_mac and r["port"] != a_port for r in lan["fdb"])  # on its own port only
    neigh = {r["address"]: r for r in lan["neighbours"]}
    assert neigh["10.61.0.10"]["mac"] == a_mac and neigh["10.61.0.10"]["mac_of"] == "a"
    ports = {r["port"]: r for r in lan["ports"]}
    assert ports[a_port]["member"] == "a" and ports[b_port]["member"] == "b"
    # a sent 2 echoes to b and 1 to the gateway (plus ARP): rx on its port; b answered
    assert ports[a_port]["rx_packets"] >= 3 and ports[a_port]["rx_bytes"] > 0
    assert ports[b_port]["rx_packets"] >= 2 and ports[b_port]["tx_packets"] >= 2
    assert ports[a_port]["guard_drops"] == 0 and ports[b_port]["guard_drops"] == 0

    # five frames with a source MAC that is not a's port's: the guard drops them, and counts them on a
    forged = eth("ff:ff:ff:ff:ff:ff", "02:de:ad:be:ef:01", 0x0800, b"\x45" + b"\0" * 40)
    send(a_ns, *[forged] * 5)
    lan = wait_for(lambda: (t := _tables(world, path)) and {r["port"]: r for r in t["ports"]}[a_port]["guard_drops"] >= 5 and t,
                   5, "five guard drops on a's port")
    ports = {r["port"]: r for r in lan["ports"]}
    assert ports[a_port]["guard_drops"] == 5 and ports[b_port]["guard_drops"] == 0
    assert not any(r["mac"] == "02:de:ad:be:ef:01" for r in lan["fdb"])  # dropped before the bridge learned it

    # the text view says the same in words
    proc = world.vnet("status", str(path), "--tables")
    assert proc.returncode == 0, proc.stderr
    assert "forwarding database" in proc.stdout and a_mac in proc.stdout and "learned" in proc.stdout

    # --watch with a bound: two redraws, the exit of the last status (0: in sync)
    proc = world.vnet("status", str(path), "--tables", "--watch", "0.5", "--count", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("forwarding database") == 2
    bad = world.vnet("status", str(path), "--watch", "0.01")
    assert bad.returncode == 2 and "--watch" in bad.stderr
