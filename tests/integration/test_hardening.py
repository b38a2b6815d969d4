"""Hardening against a hostile state directory, half-made objects, and a name taken by two files
or two targets (issue 12, items 1, 2 and 6). Each test fails on a vnet without the guard."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from vnet import api, check, sandbox, spec
from vnet.drivers import ns as nsmod
from vnet.drivers import process
from vnet.engine.journal import Journal
from vnet.errors import ClashError, VnetError

from . import snapshot
from .conftest import EXAMPLES
from .test_recovery import daemons_of, renamed, run


def _netns_of(topo) -> str:
    return next(f"{topo.name}-{ep}" for ep, e in topo.endpoints.items() if e.kind == "netns")


# --- item 1: a namespace file with no namespace mounted on it ------------------------------------


def test_a_namespace_file_left_by_a_killed_run_is_swept_by_the_next_command(world, tmp_path):
    path = renamed(world, "nat.yaml", tmp_path)
    topo = spec.load(path)
    before = snapshot.take(world.host)
    actions = world.plan(topo).actions
    k = next(i for i, a in enumerate(actions, 1) if a.op == "create" and a.resource.kind == "netns")
    name = actions[k - 1].resource.key
    # what a kill between making /run/netns/NAME and mounting the namespace on it leaves: the
    # journal with that step started, and a plain file
    journal = Journal(world.state_of(topo.name) / "journal.jsonl")
    journal.begin(actions)
    journal.start([k])
    journal.close(remove=False)
    (nsmod.NETNS_DIR / name).touch()
    try:
        assert nsmod.half_made(name) and not nsmod.exists(name)
        proc = run(world, "plan", str(path))
        assert proc.returncode == 0, proc.stderr
        assert "interrupted run" in proc.stderr
        assert not (nsmod.NETNS_DIR / name).exists(), "recovery left the half-made namespace file"
        assert snapshot.take(world.host) == before
        world.apply(topo)
        assert check.ping(world.host, "192.168.223.10")
        world.destroy(topo.name)
    finally:
        if (nsmod.NETNS_DIR / name).exists() and not nsmod.exists(name):
            (nsmod.NETNS_DIR / name).unlink()


def test_a_foreign_half_made_namespace_file_is_a_clear_error_not_a_crash(world, tmp_path):
    path = renamed(world, "nat.yaml", tmp_path)
    topo = spec.load(path)
    name = _netns_of(topo)
    (nsmod.NETNS_DIR / name).touch()  # someone's `ip netns add` killed half-way: not vnet's
    try:
        before = snapshot.take(world.host)
        for command in ("plan", "apply"):  # refused before any change, with the file named; no crash
            proc = run(world, command, str(path))
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
            assert f"{name} is a file with no namespace mounted on it" in proc.stderr, proc.stderr
        assert snapshot.take(world.host) == before
        assert (nsmod.NETNS_DIR / name).exists()  # not vnet's: left alone
    finally:
        (nsmod.NETNS_DIR / name).unlink(missing_ok=True)


# --- item 2: the state directory ----------------------------------------------------------------


@pytest.mark.parametrize("case", ["world-writable", "group-writable", "owned-by-nobody", "parent-swappable"])
def test_an_unsafe_state_directory_is_refused_before_anything_changes(world, tmp_path, case):
    state = tmp_path / "bad-state"
    if case == "parent-swappable":
        (tmp_path / "open").mkdir()
        (tmp_path / "open").chmod(0o777)  # writable by all, no sticky bit: the state dir can be swapped
        state = tmp_path / "open" / "state"
    else:
        state.mkdir(mode=0o700)
        if case == "world-writable":
            state.chmod(0o757)
        elif case == "group-writable":
            state.chmod(0o770)
        else:
            os.chown(state, 65534, 65534)
    before = snapshot.take(world.host)
    argv = [str(Path(os.sys.executable).with_name("vnet")), "--netns", world.host, "--state-dir", str(state),
            "apply", str(EXAMPLES / "nat.yaml")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "state directory" in proc.stderr, proc.stderr
    assert snapshot.take(world.host) == before


def test_a_new_state_directory_is_private(world, tmp_path):
    state = tmp_path / "fresh" / "state"
    topo = world.load("host.yaml")
    try:
        api.apply(topo, netns=world.host, state_dir=state)
        assert (state.stat().st_mode & 0o777) == 0o700
        assert (tmp_path / "fresh").stat().st_mode & 0o077 == 0
    finally:
        api.destroy(topo.name, netns=world.host, state_dir=state)


def test_a_sysctl_record_vnet_would_never_write_is_not_restored(world, tmp_path):
    """sysctl.json is data: an entry naming a sysctl vnet never sets is dropped, not written back."""
    path = renamed(world, "nat.yaml", tmp_path)
    topo = spec.load(path)
    world.apply(topo)
    record = world.state_of(topo.name) / "sysctl.json"
    data = json.loads(record.read_text())
    data["@host/net/ipv4/ip_forward"] = {"ns": "", "path": "net/ipv4/ip_forward", "before": "1"}
    data["@host/net/ipv4/conf/../../../kernel/x"] = {"ns": "", "path": "net/ipv4/conf/../../../kernel/x", "before": "1"}
    record.write_text(json.dumps(data))
    assert snapshot.sysctl(world.host, "net/ipv4/ip_forward") == "0"
    world.destroy(topo.name)
    assert snapshot.sysctl(world.host, "net/ipv4/ip_forward") == "0"


# --- item 6: a topology's name is not its identity -------------------------------------------------


def test_another_file_with_the_same_name_is_refused_unless_forced(world, tmp_path):
    first = renamed(world, "nat.yaml", tmp_path)
    topo = spec.load(first)
    proc = run(world, "apply", str(first))
    assert proc.returncode == 0, proc.stderr
    sandbox.settle(world.host)  # its new taps' carrier state comes later: compare only after
    inner = _netns_of(topo)
    sleeper = subprocess.Popen(["ip", "netns", "exec", inner, "sleep", "300"])
    try:
        second = tmp_path / "other.yaml"
        second.write_text(f"name: {topo.name}\nnetworks:\n  n: {{mode: host, subnet: 10.77.0.0/24}}\n")
        before = snapshot.take(world.host)
        proc = run(world, "apply", str(second))
        assert proc.returncode != 0
        assert f"was applied from {first.resolve()}" in proc.stderr and "--force" in proc.stderr, proc.stderr
        assert snapshot.take(world.host) == before
        assert nsmod.exists(inner) and sleeper.poll() is None
        proc = run(world, "apply", "--force", str(second))
        assert proc.returncode == 0, proc.stderr
        assert not nsmod.exists(inner)  # taken over on purpose: the first file's objects went
    finally:
        sleeper.kill()
        sleeper.wait()


def test_nothing_made_for_one_target_is_seen_or_touched_from_another(world, tmp_path):
    path = renamed(world, "nat.yaml", tmp_path)
    topo = spec.load(path)
    world.apply(topo)
    inner = _netns_of(topo)
    other = "tb" + secrets.token_hex(3)
    nsmod.create(other).close()
    try:
        subprocess.run(["ip", "-n", other, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"], check=True)
        subprocess.run(["ip", "-n", other, "link", "set", "eth0", "up"], check=True)
        subprocess.run(["ip", "-n", other, "addr", "add", "198.18.0.2/24", "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", other, "route", "add", "default", "via", "198.18.0.1"], check=True)
        state_b = api.state_of(topo.name, other, world.state)
        with pytest.raises(ClashError, match=f"network namespace {inner} exists and belongs to"):
            api.plan(topo, netns=other, state_dir=world.state)
        with pytest.raises(VnetError):
            api.apply(topo, netns=other, state_dir=world.state)
        assert nsmod.exists(inner)
        assert check.ping(inner, "192.168.223.1")  # A's endpoint still has its network
        assert api.destroy(topo.name, netns=other, state_dir=world.state) == []  # B owns nothing
        assert nsmod.exists(inner) and check.ping(inner, "192.168.223.1")
        assert state_b != world.state_of(topo.name)
    finally:
        api.destroy(topo.name, netns=other, state_dir=world.state)
        nsmod.remove(other)


def test_sandbox_destroy_destroys_the_topologies_applied_in_it_first(tmp_path):
    name = "s" + secrets.token_hex(3)
    state = tmp_path / "state"
    sb = sandbox.create(name, state_dir=state)
    try:
        topo = spec.load(EXAMPLES / "services.yaml")
        api.apply(topo, netns=sb.host, state_dir=state)
        made = [n for n in nsmod.listed() if n.startswith(f"{topo.name}-")]
        assert made
        pids = [int(p.read_text()) for p in api.state_of(topo.name, sb.host, state).glob("*.pid")]
        assert pids
    finally:
        sandbox.destroy(name, state_dir=state)
    assert not [n for n in nsmod.listed() if n.startswith(f"{topo.name}-")]
    assert all(process.is_gone(pid) for pid in pids)


# --- issue 14: deleting a namespace where processes still run --------------------------------------


def test_a_namespace_with_live_processes_is_not_deleted_without_force(world, tmp_path):
    path = renamed(world, "nat.yaml", tmp_path)
    topo = spec.load(path)
    world.apply(topo)
    inner = _netns_of(topo)
    sleeper = subprocess.Popen(["ip", "netns", "exec", inner, "sleep", "300"])
    try:
        deadline = time.monotonic() + 10
        while sleeper.pid not in nsmod.pids_in(inner):  # `ip netns exec` enters, then execs sleep
            assert time.monotonic() < deadline, "sleep never ran in the namespace"
            time.sleep(0.02)
        planned = world.plan(spec.load_text(f"name: {topo.name}\nnetworks:\n  lan0: {{mode: nat, subnet: 192.168.223.0/24, uplink: eth0}}\n"))
        assert any(f"namespace {inner} still runs" in w for w in planned.warnings)
        before = snapshot.take(world.host)
        proc = run(world, "destroy", str(path))
        assert proc.returncode != 0 and "--force" in proc.stderr, proc.stderr
        assert snapshot.take(world.host) == before and nsmod.exists(inner)
        proc = run(world, "destroy", "--force", str(path))
        assert proc.returncode == 0, proc.stderr
        assert not nsmod.exists(inner)
        assert sleeper.wait(timeout=10) is not None  # stopped with it, not left in a nameless namespace
    finally:
        sleeper.kill()
        sleeper.wait()
