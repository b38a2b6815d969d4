"""Reading the topology's namespaces ahead, in a forked child (drivers/readahead.py, observe.View):
what it hands back is what vnet reads itself; a namespace it cannot read, or a child that dies, is
read by vnet as before; a child whose answers are not wanted is stopped and reaped."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from tests.integration.test_ipv6 import wait_global6
from vnet import api, observe, readings, sandbox
from vnet.errors import VnetError
from vnet.drivers import ns as nsmod
from vnet.drivers import readahead, rtnl
from vnet.drivers.ns import Namespaces


def _gone(pid: int) -> bool:
    """The process has exited and was reaped (a zombie still has its /proc entry)."""
    return not os.path.exists(f"/proc/{pid}")


def _same_addresses(ahead: dict, own: dict) -> bool:
    """The same addresses; lifetimes, which count down between two readings (c3's SLAAC one),
    to within a second."""
    def timeless(a):
        return [getattr(a, f) for f in a._fields if f not in ("preferred", "valid")]

    return ahead.keys() == own.keys() and all(
        len(ahead[i]) == len(own[i])
        and all(timeless(x) == timeless(y) and abs(x.valid - y.valid) <= 1 and abs(x.preferred - y.preferred) <= 1 for x, y in zip(ahead[i], own[i]))
        for i in ahead
    )


def _observe(world, topo, ahead: bool = True):
    engine = api.engine(topo.name, world.host, world.state, None)
    with Namespaces(world.host) as nss:
        seen = engine.observing(nss, topo)
        if not ahead:  # what vnet reads for itself: the child's answers thrown away unread
            seen.view.close()
        return seen.finish()


def _namespaces(topo_name: str) -> list[str]:
    return [n for n in nsmod.listed() if n.startswith(f"{topo_name}-")]


def test_what_is_read_ahead_is_what_vnet_reads_itself(world):
    topo = world.load("dualstack.yaml")  # addresses and marked routes of both families in each namespace
    world.apply(topo)
    mine = _namespaces(topo.name)
    assert len(mine) >= 2
    # the two readings are moments apart: first let the kernel finish what it does by itself in
    # each namespace (c3's address from the advertisement, address detection), or one reading
    # may hold an address, or a flag, that the other does not
    assert wait_global6(f"{topo.name}-c3", "2001:db8:77::/64") is not None, "c3's SLAAC address"
    for ns in mine:
        sandbox.settle(ns)
    with Namespaces(world.host) as nss:
        own = observe.View(nss, topo.name, world.state_of(topo.name))
        ahead = observe.View(nss, topo.name, world.state_of(topo.name))
        ahead.read_ahead(mine)
        pid = ahead._ahead.pid
        assert pid and not _gone(pid)
        try:
            for ns in mine:
                assert ahead.links(ns) == own.links(ns)
                assert _same_addresses(ahead.addresses(ns), own.addresses(ns))
                assert ahead.routes(ns) == own.routes(ns)
            assert any(r.family == socket.AF_INET6 for r in ahead.routes(f"{topo.name}-c1")), "c1's IPv6 default route"
        finally:
            ahead.close()
        assert _gone(pid)
    # and the whole observation, with and without it
    assert _observe(world, topo).owned == _observe(world, topo, ahead=False).owned
    assert world.plan(topo).actions == []


def test_a_namespace_the_child_cannot_read_is_left_to_vnet(world):
    topo = world.load("nat.yaml")
    world.apply(topo)
    mine = _namespaces(topo.name)
    child = readahead.ReadAhead([*mine, "vnet-test-no-such-namespace"], readings.read_namespace)
    try:
        answers = child.take()
    finally:
        child.close()
    assert sorted(answers) == sorted(mine)
    # vnet reading that name itself says what it says without reading ahead
    said = []
    for ahead in (True, False):
        with Namespaces(world.host) as nss:
            view = observe.View(nss, topo.name, world.state_of(topo.name))
            if ahead:
                view.read_ahead(["vnet-test-no-such-namespace"])
            try:
                with pytest.raises(VnetError, match="vnet-test-no-such-namespace") as exc:
                    view.links("vnet-test-no-such-namespace")
                said.append(str(exc.value))
            finally:
                view.close()
    assert said[0] == said[1]


def test_a_child_that_dies_leaves_the_reading_to_vnet(world, monkeypatch):
    topo = world.load("nat.yaml")
    world.apply(topo)
    truth = _observe(world, topo, ahead=False)
    calls = []
    reader = readings.read_namespace

    def dies_at_the_second(nl):
        calls.append(1)  # in the child's copy of this list
        if len(calls) == 2:
            os._exit(3)  # only ever called in the child
        return reader(nl)

    monkeypatch.setattr(readings, "read_namespace", dies_at_the_second)
    assert len(_namespaces(topo.name)) >= 2
    assert _observe(world, topo).owned == truth.owned
    assert calls == []  # the parent never ran the reader


def test_vnet_reads_from_the_last_namespace_until_it_meets_the_child(world, monkeypatch):
    """The child hands the first namespace over, then reads on slowly (here: never): vnet reads
    the others itself, from the last, one at a time, and no namespace twice; the observation is
    what vnet reads alone."""
    topo = world.load("nat.yaml")
    world.apply(topo)
    truth = _observe(world, topo, ahead=False)
    mine = sorted(_namespaces(topo.name))
    assert len(mine) >= 2
    calls = []
    reader = readings.read_namespace

    def stalls_after_the_first(nl):
        calls.append(1)  # in the child's copy of this list
        if len(calls) > 1:
            signal.pause()  # until the child is stopped
        return reader(nl)

    monkeypatch.setattr(readings, "read_namespace", stalls_after_the_first)
    monkeypatch.setattr(readahead, "CHUNK", 1)
    monkeypatch.setattr(observe, "STEAL", 1)
    read_by_vnet: list[str] = []
    own = observe.View._read_own
    monkeypatch.setattr(observe.View, "_read_own", lambda self, names: (read_by_vnet.extend(names), own(self, names)))
    engine = api.engine(topo.name, world.host, world.state, None)
    with Namespaces(world.host) as nss, engine.observing(nss, topo) as seen:  # stops the child however this ends
        ahead = seen.view._ahead
        deadline = time.monotonic() + 60
        while not ahead._child.ready():  # the target and the first namespace, handed over
            assert time.monotonic() < deadline, "the child handed nothing over"
            time.sleep(0.01)
        pid = ahead.pid
        obs = seen.finish()
    assert _gone(pid) and ahead.given == 1
    assert read_by_vnet == mine[:0:-1]  # the last first, down to the one the child handed over
    assert obs.owned == truth.owned and calls == []


def test_a_child_whose_answers_are_not_wanted_is_stopped_and_reaped(world):
    topo = world.load("nat.yaml")
    world.apply(topo)
    engine = api.engine(topo.name, world.host, world.state, None)
    with Namespaces(world.host) as nss:
        with pytest.raises(RuntimeError, match="the desired state failed"):
            with engine.observing(nss, topo) as seen:
                pid = seen.view._ahead.pid
                assert pid and not _gone(pid)
                raise RuntimeError("the desired state failed")
        assert _gone(pid)


def test_the_target_read_by_the_child_is_what_vnet_reads_itself(world):
    topo = world.load("dualstack.yaml")
    world.apply(topo)
    with Namespaces(world.host) as nss:
        own = observe.View(nss, topo.name, world.state_of(topo.name))
        ahead = observe.View(nss, topo.name, world.state_of(topo.name))
        ahead.read_ahead([], readahead.ReadAhead([], readings.read_namespace, target=(world.host, readings.read_target)))
        pid = ahead._ahead.pid
        try:
            main = ahead.take_target()
            assert main and main == nss.host.nl.routes(table=rtnl.RT_TABLE_MAIN)  # the bridges' subnets at least
            assert ahead.links("") == own.links("") and any(li.mark for li in ahead.links("").values())
            assert _same_addresses(ahead.addresses(""), own.addresses(""))
            assert ahead.routes("") == own.routes("")
        finally:
            ahead.close()
        assert _gone(pid)


def test_a_target_the_child_cannot_read_is_left_to_vnet(world):
    topo = world.load("nat.yaml")
    world.apply(topo)
    mine = _namespaces(topo.name)
    with Namespaces(world.host) as nss:
        view = observe.View(nss, topo.name, world.state_of(topo.name))
        view.read_ahead(mine, readahead.ReadAhead(mine, readings.read_namespace, target=("vnet-test-no-such-namespace", readings.read_target)))
        try:
            assert view.take_target() is None  # vnet reads the target itself, as asked
            assert "" not in view._links
            assert view.links("") == observe.View(nss, topo.name, world.state_of(topo.name)).links("")
            assert all(view.links(ns) for ns in mine)
        finally:
            view.close()
