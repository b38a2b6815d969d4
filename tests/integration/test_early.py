"""Steps started early (the ruleset once the bridges exist; a network's dnsmasq once its bridge's
address, the ruleset and its lease script exist) run on a thread of their own beside the ports
being made, one after another; the run waits for them at their place in the plan, and a failure on
either side is undone only after the early step has ended."""

from __future__ import annotations

import ipaddress
import threading
import time

import pytest

from vnet import check, spec
from vnet.errors import StepFailed
from vnet.kinds import links, ruleset, service, snoop

from . import snapshot
from .test_recovery import renamed


def _spans(monkeypatch, *classes) -> list:
    """(kind, thread, start, end) of each create verb of these kind classes, as they run."""
    spans = []
    for cls in classes:
        for verb in ("create", "create_many"):
            def wrapped(self, ctx, arg, _orig=getattr(cls, verb)):
                t0 = time.monotonic()
                try:
                    return _orig(self, ctx, arg)
                finally:
                    spans.append((self.name, threading.current_thread().name, t0, time.monotonic()))
            monkeypatch.setattr(cls, verb, wrapped)
    return spans


def test_the_ruleset_loads_beside_the_ports_after_the_bridges(world, tmp_path, monkeypatch):
    topo = spec.load(renamed(world, "nat.yaml", tmp_path, "e"))
    spans = _spans(monkeypatch, links.Bridge, links.Tap, links.Veth, ruleset.Ruleset)
    world.apply(topo)
    by = {}
    for kind, thread, t0, t1 in spans:
        by.setdefault(kind, []).append((thread, t0, t1))
    ((rules_thread, r0, r1),) = by["ruleset"]
    assert rules_thread == "vnet-early"
    assert all(thread != "vnet-early" for k in ("bridge", "tap", "veth") for thread, _, _ in by[k])
    assert r0 >= max(t1 for _, _, t1 in by["bridge"])  # its flowtable may name the bridges
    assert r0 < max(t1 for _, _, t1 in by["tap"] + by["veth"])  # started before the ports were done
    assert world.plan(topo).actions == []
    world.destroy(topo.name)


def test_dnsmasq_starts_beside_the_ports_once_its_address_and_the_ruleset_are_there(world, tmp_path, monkeypatch):
    topo = spec.load(renamed(world, "services.yaml", tmp_path, "e"))
    # the veths wait (bounded) until dnsmasq has started: it can only have started if nothing
    # made it wait for them
    serving, waited = threading.Event(), []
    start_many = service.Service.create_many

    def marked(self, ctx, rs):
        serving.set()
        return start_many(self, ctx, rs)
    monkeypatch.setattr(service.Service, "create_many", marked)
    make_veths = links.Veth.create_many

    def held(self, ctx, rs):
        waited.append(serving.wait(30))
        return make_veths(self, ctx, rs)
    monkeypatch.setattr(links.Veth, "create_many", held)
    spans = _spans(monkeypatch, links.Bridge, links.BridgeAddress, ruleset.Ruleset, snoop.DhcpScript, service.Service)
    world.apply(topo)
    assert waited == [True]
    by: dict = {}
    for kind, thread, t0, t1 in spans:
        by.setdefault(kind, []).append((thread, t0, t1))
    assert {thread for thread, _, _ in by["service"]} == {"vnet-early"}
    s0 = min(t0 for _, t0, _ in by["service"])  # create, and the create_many it calls
    assert s0 >= max(t1 for _, _, t1 in by["bridge_address"] + by["ruleset"] + by["dhcp_script"])  # binds to it; its script adds to the ruleset
    # and it serves: the endpoint without an address gets a lease in the range
    leased = ipaddress.IPv4Interface(check.dhcp_client(f"{topo.name}-c2"))
    assert ipaddress.IPv4Address("192.168.60.100") <= leased.ip <= ipaddress.IPv4Address("192.168.60.150")
    assert world.plan(topo).actions == []
    world.destroy(topo.name)


def test_a_failure_in_the_early_step_undoes_the_whole_run(world, tmp_path):
    topo = spec.load(renamed(world, "nat.yaml", tmp_path, "e"))
    before = snapshot.take(world.host)
    kinds = [a.resource.kind for a in world.plan(topo).actions]
    rules = kinds.index("ruleset") + 1
    with pytest.raises(StepFailed) as failed:
        world.apply(topo, fail_at=f"{rules}:call1")  # its nft transaction ran, then it fails
    assert failed.value.step == rules
    assert snapshot.take(world.host) == before


def test_a_failure_beside_a_running_early_step_waits_for_it_before_undoing(world, tmp_path, monkeypatch):
    """The main thread fails while the ruleset is still being loaded: undoing first would find no
    table, and the table loaded after it would be left behind."""
    topo = spec.load(renamed(world, "nat.yaml", tmp_path, "e"))
    before = snapshot.take(world.host)
    kinds = [a.resource.kind for a in world.plan(topo).actions]
    first_tap = kinds.index("tap") + 1
    loading = threading.Event()
    orig = ruleset.Ruleset.create

    def slow(self, ctx, r):
        loading.set()
        time.sleep(1.0)  # still loading when the tap step fails
        return orig(self, ctx, r)
    monkeypatch.setattr(ruleset.Ruleset, "create", slow)
    with pytest.raises(StepFailed) as failed:
        world.apply(topo, fail_at=first_tap)
    assert loading.is_set() and failed.value.step == first_tap
    alive = [t for t in threading.enumerate() if t.name == "vnet-early"]
    for t in alive:
        t.join(30)  # what it made after the undo shows in the snapshot
    assert snapshot.take(world.host) == before
    assert alive == []  # the run waited for it before undoing
