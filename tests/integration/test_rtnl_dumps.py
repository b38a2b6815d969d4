"""Dumps vnet filters before it decodes them, against a real kernel."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from vnet.drivers import ns as nsmod


@pytest.fixture
def netns():
    name = f"vt-qd-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = nsmod.Namespace(name)
    try:
        yield ns
    finally:
        ns.close()
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_qdiscs_of_one_kind_are_exactly_those_the_whole_dump_holds(netns):
    ip = ["ip", "-n", netns.name]
    for i in range(3):
        subprocess.run([*ip, "link", "add", f"a{i}", "type", "veth", "peer", "name", f"b{i}"], check=True)
        subprocess.run([*ip, "link", "set", f"a{i}", "up"], check=True)
    tc = ["ip", "netns", "exec", netns.name, "tc", "qdisc", "add"]
    subprocess.run([*tc, "dev", "a0", "root", "tbf", "rate", "20mbit", "burst", "32kbit", "latency", "50ms"], check=True)
    subprocess.run([*tc, "dev", "a1", "root", "pfifo"], check=True)  # another kind, and the default elsewhere
    everything = netns.nl.qdiscs()
    assert {q.kind for q in everything} >= {"tbf", "pfifo", "noqueue"}
    tbf = netns.nl.qdiscs("tbf")
    assert tbf == [q for q in everything if q.kind == "tbf"] and len(tbf) == 1
    assert tbf[0].tbf_rate == 20_000_000 // 8
    assert netns.nl.qdiscs("pfifo") == [q for q in everything if q.kind == "pfifo"] != []
