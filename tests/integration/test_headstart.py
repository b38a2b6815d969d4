"""The head start of `vnet apply` (vnet/headstart.py): the topology's lock taken and its namespaces
read before the file is loaded; taken over by the engine only for the topology it was made for;
never begun where it would wait, create a file or read what recovery is about to change; and
nothing of it outlives the command."""

from __future__ import annotations

import signal
import subprocess
import textwrap

from tests.integration.conftest import EXAMPLES
from tests.integration.test_readahead import _gone
from vnet import api, headstart, readings, statedir
from vnet.drivers import ns as nsmod
from vnet.drivers import readahead
from vnet.flock import flock, held


def _lock(world, topology: str):
    return statedir.topology_lock(statedir.target_root(statedir.secure(world.state, create=False), world.host), topology)


def _files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_reapply_takes_over_the_head_start(world):
    topo = world.load("nat.yaml")
    world.apply(topo)
    lock = _lock(world, topo.name)
    with headstart.begin(str(EXAMPLES / "nat.yaml"), str(world.state), world.host) as head:
        assert head.started and held(lock)
        pid = head._ahead.pid
        assert pid and not _gone(pid)
        assert sorted(head._ahead.names) == sorted(n for n in head.listed if n.startswith(f"{topo.name}-"))
        assert api.apply(topo, netns=world.host, state_dir=world.state, head=head) == []
        assert head._ahead is None  # the engine took the child
        assert not held(lock)  # and released the lock it took over, at the end of the run
        assert _gone(pid)  # its child reaped
    # what the engine saw through the head start is what it sees without one
    assert world.plan(topo).actions == []


def test_a_head_start_sees_a_change_made_before_it(world):
    """What the child reads is the host as the run begins: a route taken away by hand is put back."""
    topo = world.load("nat.yaml")
    world.apply(topo)
    subprocess.run(["ip", "-n", f"{topo.name}-c1", "route", "del", "default"], check=True)
    planned = [a.describe() for a in world.plan(topo).actions]
    assert planned and all("route" in line for line in planned), planned
    with headstart.begin(str(EXAMPLES / "nat.yaml"), str(world.state), world.host) as head:
        assert head.started
        applied = api.apply(topo, netns=world.host, state_dir=world.state, head=head)
    assert [a.describe() for a in applied] == planned
    assert world.plan(topo).actions == []


def test_a_head_start_sees_a_change_of_the_target_made_before_it(world):
    """The target namespace, read by the child first: a bridge's MAC changed by hand is put back,
    and its address taken away is added again."""
    topo = world.load("nat.yaml")
    world.apply(topo)
    want = world.plan(topo).desired
    br = next(r.key for r in want if r.kind == "bridge")
    gw = next(r for r in want if r.kind == "bridge_address")
    subprocess.run(["ip", "-n", world.host, "link", "set", br, "address", "02:00:00:00:00:99"], check=True)
    subprocess.run(["ip", "-n", world.host, "addr", "del", f"{gw.get('address')}/{gw.get('prefixlen')}", "dev", br], check=True)
    planned = sorted(a.describe() for a in world.plan(topo).actions)
    assert any(line.startswith("~ bridge ") for line in planned) and any("bridge_address" in line for line in planned), planned
    with headstart.begin(str(EXAMPLES / "nat.yaml"), str(world.state), world.host) as head:
        assert head.started
        applied = api.apply(topo, netns=world.host, state_dir=world.state, head=head)
    assert sorted(a.describe() for a in applied) == planned
    assert world.plan(topo).actions == []


_read_in = readahead._read_in


def _stalls_in_namespaces(name, reader):
    if reader is not readings.read_target:
        signal.pause()  # in the child, until it is stopped: it hands over the target, no namespace
    return _read_in(name, reader)


def test_the_namespaces_the_child_has_not_reached_are_read_by_vnet(world, monkeypatch):
    """vnet reads the last namespaces itself for as long as the child has not reached them: here
    a child that never hands one over, so vnet reads them all, finds a change made in one of
    them, and stops the child."""
    topo = world.load("nat.yaml")
    world.apply(topo)
    mine = sorted(n for n in nsmod.listed() if n.startswith(f"{topo.name}-"))
    assert mine
    subprocess.run(["ip", "-n", mine[-1], "route", "del", "default"], check=True)
    planned = [a.describe() for a in world.plan(topo).actions]
    assert planned and all("route" in line for line in planned), planned
    with monkeypatch.context() as m:  # the head start's child only: what the run reads later reads as ever
        m.setattr(readahead, "_read_in", _stalls_in_namespaces)
        head = headstart.begin(str(EXAMPLES / "nat.yaml"), str(world.state), world.host)
    with head:
        assert head.started and head._ahead.names == mine
        pid = head._ahead.pid
        applied = api.apply(topo, netns=world.host, state_dir=world.state, head=head)
        assert _gone(pid)
    assert [a.describe() for a in applied] == planned
    assert world.plan(topo).actions == []


def test_no_head_start_for_a_first_apply_and_nothing_made(world):
    world.state.mkdir(parents=True, exist_ok=True)
    before = _files(world.state)
    with headstart.begin(str(EXAMPLES / "nat.yaml"), str(world.state), world.host) as head:
        assert not head.started
    assert _files(world.state) == before


def test_no_head_start_while_another_run_holds_the_topology(world):
    topo = world.load("nat.yaml")
    world.apply(topo)
    lock = _lock(world, topo.name)
    with flock(lock, "the other run"):  # a second open file: this process's own head start cannot take it
        with headstart.begin(str(EXAMPLES / "nat.yaml"), str(world.state), world.host) as head:
            assert not head.started and head._ahead is None
    assert not held(lock)


def test_no_head_start_where_a_journal_waits_to_be_undone(world):
    topo = world.load("nat.yaml")
    world.apply(topo)
    journal = world.state_of(topo.name) / "journal.jsonl"
    journal.write_text("")  # what a killed run leaves (empty: nothing begun)
    try:
        with headstart.begin(str(EXAMPLES / "nat.yaml"), str(world.state), world.host) as head:
            assert not head.started and head._ahead is None
            assert not held(_lock(world, topo.name))  # given back at once
    finally:
        journal.unlink()


def test_a_head_start_for_another_topology_is_dropped(world, tmp_path):
    topo = world.load("nat.yaml")
    world.apply(topo)
    other = world.load("isolated.yaml")
    assert other.name != topo.name
    lock = _lock(world, topo.name)
    with headstart.begin(str(EXAMPLES / "nat.yaml"), str(world.state), world.host) as head:
        pid = head._ahead.pid
        world.applied.add(other.name)
        api.apply(other, netns=world.host, state_dir=world.state, head=head)
        assert head._ahead is not None and held(lock)  # not taken: made for another topology
    assert not held(lock) and _gone(pid)


def test_an_invalid_file_leaves_no_child_and_no_lock(world, tmp_path):
    topo = world.load("nat.yaml")
    world.apply(topo)
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(f"""\
        name: {topo.name}
        networks:
          lan: {{mode: nat, subnet: 10.0.0.0/33}}
        """))
    out = world.vnet("apply", str(bad))
    assert out.returncode != 0 and "subnet" in out.stderr, out.stderr
    # the head start's child shares the lock's open file: a child left running would hold it
    assert not held(_lock(world, topo.name))
    assert world.plan(topo).actions == []


def test_guess_name():
    guess = headstart.guess_name
    assert guess("name: lab\nnetworks: {}\n") == "lab"
    assert guess("# c\nnetworks:\n  a: {name: x}\nname: 'q-1'  # the lab\n") == "q-1"
    assert guess('name: "lab"\n') == "lab"
    assert guess("networks:\n  name: lab\n") is None  # not top-level
    assert guess("{name: lab}\n") is None  # flow style: left to the loader
    assert guess("name: Lab\n") is None  # not a topology name
    assert guess("name: lab extra\n") is None
