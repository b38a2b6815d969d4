"""kill -9 at any point of apply or destroy: the next vnet command notices the journal, says so, and
puts the host back exactly as it was before the killed run (full snapshot compare)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from vnet import check, dnsconf, sandbox, spec
from vnet.drivers import ns as nsmod
from vnet.errors import StepFailed
from vnet.plan import batches

from . import snapshot
from .conftest import EXAMPLES

VNET = str(Path(os.sys.executable).with_name("vnet"))
# vnet with the faults its environment asks for (VNET_KILL_AT, VNET_FAIL_AT, VNET_STEP_DELAY)
# installed from outside: the vnet command itself carries no test hooks
FAULTY = [os.sys.executable, "-m", "tests.faults"]
FAULTY_ENV = {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def renamed(world, example: str, tmp: Path, prefix: str = "k") -> Path:
    """A copy of an example under a name of its own, so that its endpoint namespaces (global
    names) never meet those of tests running at the same time. The world destroys it at the end,
    whatever happened (destroy also recovers an interrupted run)."""
    text = (EXAMPLES / example).read_text()
    old = spec.load(EXAMPLES / example).name
    name = prefix + secrets.token_hex(3)
    path = tmp / f"{name}.yaml"
    path.write_text(text.replace(f"name: {old}\n", f"name: {name}\n", 1))
    assert spec.load(path).name == name
    world.applied.add(name)
    return path


def run(world, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    argv = [*(FAULTY if env else [VNET]), "--netns", world.host, "--state-dir", str(world.state), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, **FAULTY_ENV, **(env or {})})


def killed(world, command: str, path: Path, point: str) -> None:
    proc = run(world, command, str(path), env={"VNET_KILL_AT": point})
    assert proc.returncode == -signal.SIGKILL, f"{command} at {point} was not killed: {proc.returncode} {proc.stderr}"


def own_namespaces(name: str) -> list[str]:
    return [n for n in nsmod.listed() if n.startswith(f"{name}-")]


def daemons_of(world, name: str) -> list[int]:
    marker = str(world.state_of(name))
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def recover_with(world, command: str, path: Path) -> subprocess.CompletedProcess:
    proc = run(world, command, str(path))
    assert "interrupted run" in proc.stderr, f"{command} did not report the journal: {proc.stdout} {proc.stderr}"
    assert "Traceback" not in proc.stderr
    sandbox.settle(world.host)
    return proc


def points_for(steps: int) -> list[str]:
    """Before every step (journaled, not run) and after it (run, not marked done)."""
    return [p for k in range(1, steps + 1) for p in (f"{k}", f"{k}:after")]


def test_kill_apply_at_every_point_then_next_command_restores_host(world, tmp_path):
    path = renamed(world, "nat.yaml", tmp_path)
    topo = spec.load(path)
    actions = world.plan(topo).actions
    kinds = [a.resource.kind for a in actions]
    assert {"netns", "bridge", "tap", "veth", "address", "route", "ruleset", "sysctl"} <= set(kinds)
    before = snapshot.take(world.host)
    journal = world.state_of(topo.name) / "journal.jsonl"
    # inside steps: a veth made but its peer not marked, a namespace made but not marked, a bridge
    # without its mark, the sysctls read (nothing recorded yet) and written (not yet marked done)
    inside = [f"{kinds.index(k) + 1}:call{n}" for k, n in (("netns", 1), ("bridge", 1), ("veth", 1), ("veth", 2), ("tap", 2), ("sysctl", 1), ("sysctl", 2))]
    points = points_for(len(actions)) + inside
    commands = ("plan", "status", "destroy")
    untouched = []  # kills after which the host showed nothing to undo
    for i, point in enumerate(points):
        killed(world, "apply", path, point)
        assert journal.exists(), f"kill at {point} left no journal"
        if snapshot.take(world.host) == before and own_namespaces(topo.name) == []:
            untouched.append(point)
        recover_with(world, commands[i % len(commands)], path)
        assert not journal.exists()
        assert snapshot.take(world.host) == before, f"kill at {point}: host not restored"
        assert own_namespaces(topo.name) == [], f"kill at {point}: namespaces left"
    # every kill but those before the first batch (the namespaces, made in one call) left a
    # half-made host that recovery had to undo
    first_batch = batches(actions)[0]
    assert len(points) >= 36
    assert untouched == [str(i + 1) for i in first_batch], f"kills that left nothing to recover: {untouched}"
    # and a normal apply, then destroy, leave nothing behind
    world.applied.add(topo.name)
    proc = run(world, "apply", str(path))
    assert proc.returncode == 0, proc.stderr
    assert check.ping(f"{topo.name}-c1", sandbox.WAN_ADDR)
    proc = run(world, "destroy", str(path))
    assert proc.returncode == 0, proc.stderr
    sandbox.settle(world.host)
    assert snapshot.take(world.host) == before
    assert own_namespaces(topo.name) == []
    assert not (world.state_of(topo.name)).exists()


def test_kill_destroy_then_next_command_restores_the_network(world, tmp_path):
    path = renamed(world, "nat.yaml", tmp_path)
    topo = spec.load(path)
    steps = len(world.plan(topo).actions)  # destroy has as many steps as apply
    before = snapshot.take(world.host)
    world.apply(topo)
    applied = snapshot.take(world.host)
    # spread over the run; 1:call1 dies between reading and restoring a forwarding sysctl
    points = ["1", "1:call1", "2:after"] + [f"{k}" if k % 2 else f"{k}:after" for k in range(4, steps + 1, 2)] + [f"{steps}:after"]
    for point in points:
        killed(world, "destroy", path, point)
        recover_with(world, "plan", path)
        assert snapshot.take(world.host) == applied, f"destroy killed at {point}: network not restored"
    assert len(points) >= 10
    assert check.ping(f"{topo.name}-c1", sandbox.WAN_ADDR)
    world.destroy(topo.name)
    assert snapshot.take(world.host) == before


def test_kill_in_dnsmasq_and_firewall_steps(world, tmp_path):
    path = renamed(world, "services.yaml", tmp_path)
    topo = spec.load(path)
    actions = world.plan(topo).actions
    kinds = [a.resource.kind for a in actions]
    svc, rules = kinds.index("service") + 1, kinds.index("ruleset") + 1
    before = snapshot.take(world.host)
    for point in (f"{rules}", f"{rules}:after", f"{rules}:call1", f"{svc}", f"{svc}:call1", f"{svc}:after"):
        killed(world, "apply", path, point)
        recover_with(world, "plan", path)
        assert snapshot.take(world.host) == before, f"kill at {point}: host not restored"
        assert daemons_of(world, topo.name) == [], f"kill at {point}: dnsmasq left running"
        assert own_namespaces(topo.name) == []
    # killed while destroying: dnsmasq comes back with the rest
    world.apply(topo)
    applied = snapshot.take(world.host)
    conf = dnsconf.files(world.state_of(topo.name), "lan0")["conf"]
    assert daemons_of(world, topo.name)
    killed(world, "destroy", path, "1:after")  # the service is the first thing destroy stops
    assert not daemons_of(world, topo.name)
    recover_with(world, "status", path)
    assert snapshot.take(world.host) == applied
    assert daemons_of(world, topo.name) and conf.exists()
    assert run(world, "plan", str(path)).stdout.strip().startswith("no changes")
    world.destroy(topo.name)
    assert snapshot.take(world.host) == before
    assert daemons_of(world, topo.name) == []


def test_recovery_killed_itself_is_finished_by_the_next_command(world, tmp_path):
    path = renamed(world, "nat.yaml", tmp_path)
    topo = spec.load(path)
    before = snapshot.take(world.host)
    killed(world, "apply", path, "12:after")
    for n in (1, 3, 5):  # the recovery dies too, at different points
        proc = run(world, "plan", str(path), env={"VNET_KILL_AT": f"recover:{n}"})
        assert proc.returncode == -signal.SIGKILL
    recover_with(world, "plan", path)
    assert snapshot.take(world.host) == before
    assert own_namespaces(topo.name) == []


def test_unmarked_leftovers_of_a_step_cut_short_are_removed(world, tmp_path):
    """A kill right after the first kernel call of a step leaves an object without its mark:
    a bridge, a veth pair, a namespace. Recovery removes exactly those, nothing foreign."""
    path = renamed(world, "nat.yaml", tmp_path)
    topo = spec.load(path)
    kinds = [a.resource.kind for a in world.plan(topo).actions]
    before = snapshot.take(world.host)
    for kind in ("netns", "bridge", "veth"):
        killed(world, "apply", path, f"{kinds.index(kind) + 1}:call1")
        recover_with(world, "plan", path)
        assert snapshot.take(world.host) == before
        assert own_namespaces(topo.name) == []


@pytest.mark.parametrize("outage", ["router link down", "router ignores ARP"])
def test_bridged_uplink_move_is_reverted_when_the_gateway_does_not_answer(world, tmp_path, outage):
    path = renamed(world, "bridged.yaml", tmp_path, "u")
    topo = spec.load(path)
    lan = world.sb.lan
    if outage == "router link down":
        subprocess.run(["ip", "-n", lan, "link", "set", "lan", "down"], check=True)
        deadline = time.monotonic() + 5  # the host sees its carrier go
        while "NO-CARRIER" not in subprocess.run(["ip", "-n", world.host, "link", "show", "eth0"], capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    else:
        subprocess.run(["ip", "netns", "exec", lan, "nft", "-f", "-"], check=True, text=True,
                       input="table arp deaf {\n chain arpin {\n  type filter hook input priority 0; policy drop;\n }\n}\n")
    sandbox.settle(world.host)
    before = snapshot.take(world.host)
    t0 = time.monotonic()
    proc = run(world, "apply", str(path), env={"VNET_UPLINK_TIMEOUT": "2"})
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert f"uplink check failed after eth0 joined br-lan: the default gateway {sandbox.LAN_ROUTER} did not answer ARP on br-lan within 2s" in err
    assert "eth0 was taken out of the bridge and the host's addresses and routes moved back" in err
    assert "everything this run changed was undone" in err
    assert elapsed < 2 + 1 + 8, f"took {elapsed:.1f}s"
    sandbox.settle(world.host)
    assert snapshot.take(world.host) == before
    assert own_namespaces(topo.name) == []
    # the gateway back: the same apply passes the check and the host keeps its reach
    if outage == "router link down":
        subprocess.run(["ip", "-n", lan, "link", "set", "lan", "up"], check=True)
        deadline = time.monotonic() + 5
        while "NO-CARRIER" in subprocess.run(["ip", "-n", world.host, "link", "show", "eth0"], capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    else:
        subprocess.run(["ip", "netns", "exec", lan, "nft", "delete", "table", "arp", "deaf"], check=True)
    sandbox.settle(world.host)
    restored = snapshot.take(world.host)
    world.applied.add(topo.name)
    proc = run(world, "apply", str(path), env={"VNET_UPLINK_TIMEOUT": "2"})
    assert proc.returncode == 0, proc.stderr
    assert check.ping(world.host, sandbox.WAN_ADDR)
    world.destroy(topo.name)
    assert snapshot.take(world.host) == restored


@pytest.mark.parametrize("example", ["nat.yaml", "bridged.yaml", "services.yaml"])
def test_fault_at_every_destroy_step_leaves_the_network_intact(world, tmp_path, example):
    """Fault injection at every destroy step: links, firewall and sysctls (nat), the uplink move
    (bridged), dnsmasq (services)."""
    topo = spec.load(renamed(world, example, tmp_path, "e"))
    steps = len(world.plan(topo).actions)  # destroy has one step per resource, as apply
    before = snapshot.take(world.host)
    world.apply(topo)
    applied = snapshot.take(world.host)
    k = 1
    while True:
        try:
            world.destroy(topo.name, fail_at=k)
        except StepFailed as exc:
            # a fault inside a batch of link deletions fails the batch as one step: its first
            assert exc.step <= k and f"step {exc.step} (" in str(exc)
            assert snapshot.take(world.host) == applied, f"fault at destroy step {k} left a change"
            k += 1
            continue
        break
    assert k - 1 == steps >= 5  # every step was tried, then the real destroy ran
    assert snapshot.take(world.host) == before
    assert daemons_of(world, topo.name) == []
