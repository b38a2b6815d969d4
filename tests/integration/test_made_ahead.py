"""Namespaces made ahead while vnet plans (drivers/spares.py) change nothing on the host until the
run names them: a plan that is refused leaves neither a namespace nor the child that made them."""

from __future__ import annotations

import os
import subprocess

import pytest

from vnet import check, spec
from vnet.drivers import ns as nsmod
from vnet.drivers import spares
from vnet.errors import ClashError
from vnet.facts import endpoint_netns

from tests.integration import snapshot

ENDPOINTS = spares.WORTH + 8  # enough for a child to be worth its fork


def _topology(name: str):
    lines = [f"name: {name}", "networks:", "  lan:", "    mode: isolated", "    subnet: 10.91.0.0/24", "endpoints:"]
    lines += [f"  e{i}: {{kind: netns, network: lan, address: 10.91.0.{i + 10}/24}}" for i in range(ENDPOINTS)]
    return spec.load_text("\n".join(lines) + "\n")


@pytest.fixture
def forked(monkeypatch):
    """The pids of the children that made namespaces ahead in this test (the production code as
    it is, watched: its constructor wrapped)."""
    pids: list[int] = []
    init = spares.Spares.__init__

    def watched(self, count):
        init(self, count)
        pids.append(self.pid)

    monkeypatch.setattr(spares.Spares, "__init__", watched)
    return pids


def test_a_refused_plan_leaves_no_namespace_and_no_child(world, forked):
    topo = _topology("ahead" + world.name[-4:])
    bridge = next(a.new.key for a in world.plan(topo).actions if a.new is not None and a.new.kind == "bridge")
    assert forked == []  # plan makes nothing ahead
    # someone else's link holds the bridge's name: the plan is refused after the child has begun
    subprocess.run(["ip", "-n", world.host, "link", "add", bridge, "type", "veth", "peer", "name", "theirs"], check=True)
    before, listed = snapshot.take(world.host), sorted(os.listdir(nsmod.NETNS_DIR))
    with pytest.raises(ClashError, match=bridge):
        world.apply(topo)
    assert len(forked) == 1 and forked[0] > 0  # the child did start: what follows is its cleanup
    assert not os.path.exists(f"/proc/{forked[0]}")  # killed by its pid and reaped
    assert sorted(os.listdir(nsmod.NETNS_DIR)) == listed
    assert snapshot.take(world.host) == before


def test_an_apply_names_the_namespaces_made_ahead(world, forked):
    topo = _topology("ahead" + world.name[-4:])
    world.apply(topo)
    assert len(forked) == 1
    assert not os.path.exists(f"/proc/{forked[0]}")
    assert world.plan(topo).actions == []
    # each endpoint in a namespace of its own, reaching the others across the bridge
    inner = [n for n in nsmod.listed() if n.startswith(f"{topo.name}-")]
    assert len(inner) == ENDPOINTS and len({os.stat(nsmod.NETNS_DIR / n).st_ino for n in inner}) == ENDPOINTS
    first, last = endpoint_netns(topo, "e0"), ENDPOINTS - 1
    assert check.ping(first, f"10.91.0.{last + 10}")  # the first namespace made ahead reaches the last one made
