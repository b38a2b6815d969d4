"""Atomic apply and destroy, idempotence, bad input and clashes: the host never ends half-changed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vnet.errors import StepFailed
from vnet.plan import batches

from . import snapshot


def test_reapply_is_a_noop_and_status_is_in_sync(world):
    topo = world.load("nat.yaml")
    assert world.apply(topo)
    assert world.apply(topo) == []
    assert world.plan(topo).actions == []
    proc = world.vnet("status", str(Path(__file__).resolve().parents[2] / "examples" / "nat.yaml"), "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert '"in_sync": true' in proc.stdout


def first_of_batch(actions) -> dict[int, int]:
    """Step number → the first step of the batch it runs in (itself, for a step that runs alone)."""
    return {i + 1: run[0] + 1 for run in batches(actions) for i in run}


@pytest.mark.parametrize("example", ["nat.yaml", "bridged.yaml"])
def test_fault_at_every_apply_step_leaves_host_unchanged(world, example):
    topo = world.load(example)
    first = first_of_batch(world.plan(topo).actions)
    steps = len(first)
    assert steps >= 5
    before = snapshot.take(world.host)
    for k in range(1, steps + 1):
        with pytest.raises(StepFailed) as failed:
            world.apply(topo, fail_at=k)
        # steps that run as one batch (veth pairs, daemons) fail as one, at the batch's first
        assert failed.value.step == first[k]
        assert f"step {first[k]} (" in str(failed.value)
        assert snapshot.take(world.host) == before, f"fault at step {k} left a change"
    assert len(world.apply(topo)) == steps  # and a clean apply still works afterwards


@pytest.mark.parametrize("example", ["nat.yaml", "bridged.yaml", "services.yaml"])
def test_a_fault_inside_every_apply_step_leaves_host_unchanged(world, example):
    """A real change made halfway (a link made but not configured, a dnsmasq started, the uplink in
    the bridge with its addresses moved), then the step fails: the run still leaves nothing."""
    topo = world.load(example)
    first = first_of_batch(world.plan(topo).actions)
    steps = len(first)
    before = snapshot.take(world.host)
    inside = 0
    for k in range(1, steps + 1):
        try:
            world.apply(topo, fail_at=f"{k}:call1")
        except StepFailed as failed:
            inside += 1
            assert failed.step == first[k]
            assert "inside step" in str(failed.__cause__)
        else:  # step k makes no driver call: the fault never fired, the apply went through
            world.destroy(topo.name)
        assert snapshot.take(world.host) == before, f"a fault inside step {k} left a change"
    assert inside >= steps - 2  # nearly every step talks to the kernel or a tool


# destroy with a fault at every step: tests/integration/test_recovery.py (nat, bridged, services)


BAD = {
    "unknown key": "name: x\nnetworks:\n  n: {mode: nat, subnet: 10.9.0.0/24, colour: red}\n",
    "bad cidr": "name: x\nnetworks:\n  n: {mode: host, subnet: 10.9.0.0/33}\n",
    "overlap": "name: x\nnetworks:\n  n: {mode: host, subnet: 10.9.0.0/24}\n  m: {mode: host, subnet: 10.9.0.128/25}\n",
    "outside": "name: x\nnetworks:\n  n: {mode: host, subnet: 10.9.0.0/24}\nendpoints:\n  e: {kind: netns, network: n, address: 10.10.0.5/24}\n",
    "long name": "name: x\nnetworks:\n  n: {mode: host, subnet: 10.9.0.0/24, bridge: abcdefghijklmnop}\n",
    "dup mac": "name: x\nendpoints:\n  a: {kind: tap, mac: '52:54:00:00:00:01'}\n  b: {kind: tap, mac: '52:54:00:00:00:01'}\n",
    "missing uplink": "name: x\nnetworks:\n  n: {mode: nat, subnet: 10.9.0.0/24, uplink: nosuch0}\n",
    "host route": "name: x\nnetworks:\n  n: {mode: host, subnet: 192.0.2.0/25}\n",
    "bridged nic missing": "name: x\nnetworks:\n  n: {mode: bridged, uplink: nosuch0}\n",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_and_changes_nothing(world, tmp_path, case):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD[case])
    before = snapshot.take(world.host)
    proc = world.vnet("apply", str(path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("error: ") and ("networks." in first or "endpoints." in first), first
    assert snapshot.take(world.host) == before


def test_clash_with_foreign_bridge_is_refused_and_foreign_bridge_kept(world, tmp_path):
    subprocess.run(["ip", "-n", world.host, "link", "add", "vb-lab-lan0", "type", "bridge"], check=True)
    subprocess.run(["ip", "-n", world.host, "link", "add", "vt-lab-vm2", "type", "veth", "peer", "name", "other"], check=True)
    before = snapshot.take(world.host)
    proc = world.vnet("apply", str(Path(__file__).resolve().parents[2] / "examples" / "nat.yaml"))
    assert proc.returncode == 2
    assert "vb-lab-lan0 exists already" in proc.stderr and "vt-lab-vm2 exists already" in proc.stderr
    # each named by the place in the file that chose the name
    assert "networks.lan0.bridge: interface vb-lab-lan0 exists already" in proc.stderr
    assert "endpoints.vm2: interface vt-lab-vm2 exists already" in proc.stderr
    assert snapshot.take(world.host) == before
    proc = world.vnet("destroy", str(Path(__file__).resolve().parents[2] / "examples" / "nat.yaml"))
    assert proc.returncode == 0
    assert snapshot.take(world.host) == before  # destroy does not touch what is not vnet's


def test_without_root_changes_are_refused(world):
    example = str(Path(__file__).resolve().parents[2] / "examples" / "nat.yaml")
    before = snapshot.take(world.host)
    proc = world.vnet("apply", example, user=65534)
    assert proc.returncode != 0
    assert "needs root" in proc.stderr
    assert snapshot.take(world.host) == before
    proc = world.vnet("validate", example, user=65534)
    assert proc.returncode == 0, proc.stderr
