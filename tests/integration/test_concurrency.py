"""Two runs at once: the same topology is serialised by its lock; different topologies in one
namespace both end correct; a subnet, bridge or uplink another topology holds is a clear error."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import time
from pathlib import Path

from vnet import check, sandbox, spec

from . import snapshot
from .test_recovery import FAULTY, FAULTY_ENV, VNET, renamed


def topology(world, tmp: Path, subnet: str, bridge: str | None = None, name: str | None = None) -> Path:
    name = name or "c" + secrets.token_hex(3)
    world.applied.add(name)  # destroyed at the end whatever happens
    net = ipaddress.IPv4Network(subnet)
    text = f"""name: {name}
networks:
  n:
    mode: nat
    subnet: {subnet}
    uplink: eth0
{f"    bridge: {bridge}" if bridge else ""}
endpoints:
  c1: {{kind: netns, network: n, address: {net.network_address + 10}/{net.prefixlen}}}
  t1: {{kind: tap, network: n}}
"""
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return path


def start(world, *args: str, env: dict | None = None) -> subprocess.Popen:
    argv = [*(FAULTY if env else [VNET]), "--netns", world.host, "--state-dir", str(world.state), *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **FAULTY_ENV, **(env or {})})
    world.procs.append(proc)  # stopped by the fixture if the test fails before it ends
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def apply_at_once(world, paths: list[Path], delay: str) -> list[tuple[int, str, str]]:
    """Start an apply of each file at the same moment (each step slowed by delay), wait for all."""
    procs = [start(world, "apply", str(p), env={"VNET_STEP_DELAY": delay}) for p in paths]
    return [finish(p) for p in procs]


def wait_for_journal(world, name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not (world.topo_state(name) / "journal.jsonl").exists():
        assert time.monotonic() < deadline, "the first run never started changing the host"
        time.sleep(0.01)


def forwarding(ns: str, dev: str) -> str:
    return snapshot.sysctl(ns, f"net/ipv4/conf/{dev}/forwarding")


def test_same_topology_twice_at_once_is_serialised(world, tmp_path):
    path = renamed(world, "nat.yaml", tmp_path, "s")
    name = spec.load(path).name
    world.applied.add(name)
    first = start(world, "apply", str(path), env={"VNET_STEP_DELAY": "0.15"})
    wait_for_journal(world, name)  # the first holds the lock and is half-way
    second = start(world, "apply", str(path))
    rc1, out1, err1 = finish(first)
    rc2, out2, err2 = finish(second)
    assert rc1 == 0, err1
    assert rc2 == 0, err2
    assert f"waiting for another vnet run on topology {name} (pid {first.pid})" in err2
    assert out1.strip().splitlines()[-1].startswith(f"applied {name}: ")
    assert out2.strip().splitlines()[-1] == "no changes: the host matches the topology"
    assert world.plan(spec.load(path)).actions == []


def test_a_second_run_can_give_up_waiting_clearly(world, tmp_path):
    path = renamed(world, "nat.yaml", tmp_path, "s")
    name = spec.load(path).name
    world.applied.add(name)
    first = start(world, "apply", str(path), env={"VNET_STEP_DELAY": "0.2"})
    wait_for_journal(world, name)
    second = start(world, "destroy", str(path), env={"VNET_LOCK_TIMEOUT": "0.5"})
    rc2, _, err2 = finish(second)
    rc1, _, err1 = finish(first)
    assert rc1 == 0, err1
    assert rc2 == 1 and f"another vnet run (pid {first.pid}) holds topology {name}; gave up after 0.5s" in err2
    assert world.plan(spec.load(path)).actions == []  # the destroy that gave up changed nothing


def test_two_topologies_in_parallel_both_end_correct(world, tmp_path):
    a, b = topology(world, tmp_path, "10.61.1.0/24"), topology(world, tmp_path, "10.61.2.0/24")
    ta, tb = spec.load(a), spec.load(b)
    before = snapshot.take(world.host)
    results = apply_at_once(world, [a, b], "0.05")
    assert [r[0] for r in results] == [0, 0], [r[2] for r in results]
    sandbox.settle(world.host)
    assert world.plan(ta).actions == [] and world.plan(tb).actions == []
    for t, net in ((ta, "10.61.1"), (tb, "10.61.2")):
        assert check.ping(f"{t.name}-c1", sandbox.WAN_ADDR)
        assert check.tcp_line(f"{t.name}-c1", sandbox.WAN_ADDR, sandbox.WAN_PORT) == sandbox.HOST_ADDR
    assert forwarding(world.host, "eth0") == "1"
    # both set the uplink's forwarding; the one that set it first (and found 0) goes first: it
    # must leave it on for the other, and the other must restore the 0 at the end
    key = "@host/net/ipv4/conf/eth0/forwarding"
    found = {t.name: json.loads((world.topo_state(t.name) / "sysctl.json").read_text())[key]["before"] for t in (ta, tb)}
    assert sorted(found.values()) == ["0", "1"]
    first, last = (ta, tb) if found[ta.name] == "0" else (tb, ta)
    world.destroy(first.name)
    assert forwarding(world.host, "eth0") == "1"
    assert world.plan(last).actions == []
    assert check.ping(f"{last.name}-c1", sandbox.WAN_ADDR)
    world.destroy(last.name)
    assert forwarding(world.host, "eth0") == before["sysctl"]["eth0.forwarding"]
    assert snapshot.take(world.host) == before


def test_subnet_bridge_uplink_claimed_by_another_topology_is_a_clear_error(world, tmp_path):
    first = topology(world, tmp_path, "10.62.0.0/24", bridge="brshared")
    t1 = spec.load(first)
    world.apply(t1)
    held = snapshot.take(world.host)
    for path, words in (
        (topology(world, tmp_path, "10.62.0.128/25"), [f"networks.n.subnet: 10.62.0.128/25 overlaps 10.62.0.0/24", f"topology {t1.name!r}"]),
        (topology(world, tmp_path, "10.63.0.0/24", bridge="brshared"), ["brshared", f"topology {t1.name!r}"]),
    ):
        for command in ("plan", "apply"):
            proc = subprocess.run([VNET, "--netns", world.host, "--state-dir", str(world.state), command, str(path)],
                                  capture_output=True, text=True, timeout=60)
            assert proc.returncode == 2, proc.stdout + proc.stderr
            assert all(w in proc.stderr for w in words), proc.stderr
            assert "Traceback" not in proc.stderr
        assert snapshot.take(world.host) == held


def test_same_subnet_applied_at_once_only_one_wins(world, tmp_path):
    """The race preflight alone cannot see: neither has a route yet when both check."""
    a, b = topology(world, tmp_path, "10.64.0.0/24"), topology(world, tmp_path, "10.64.0.0/24")
    ta, tb = spec.load(a), spec.load(b)
    before = snapshot.take(world.host)
    results = apply_at_once(world, [a, b], "0.1")
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], [r[2] for r in results]
    winner, loser = (ta, tb) if results[0][0] == 0 else (tb, ta)
    err = results[1 if winner is ta else 0][2]
    assert f"claimed by topology {winner.name!r}" in err
    assert check.ping(f"{winner.name}-c1", sandbox.WAN_ADDR)
    world.destroy(winner.name)
    world.destroy(loser.name)
    assert snapshot.take(world.host) == before
