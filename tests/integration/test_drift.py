"""Drift: someone changes vnet's objects by hand. `plan` shows exactly that change, `status` marks
it, and `apply` repairs only that: every other object keeps its kernel identity (ifindex)."""

from __future__ import annotations

import json
import subprocess

import pytest

from vnet import api, check, sandbox, spec

from . import snapshot
from .test_recovery import renamed, run


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True)


def _write_sysctl(ns: str, path: str, value: str) -> None:
    snapshot.inside(ns, lambda: open(f"/proc/sys/{path}", "w").write(value + "\n"))


def _indexes(world, topo) -> dict[tuple[str, str], int]:
    """ifindex of every link in the host and in the topology's endpoint namespaces."""
    out = {}
    for ns in [world.host, *(f"{topo.name}-{ep}" for ep, e in topo.endpoints.items() if e.kind == "netns")]:
        for link in json.loads(subprocess.run(["ip", "-n", ns, "-j", "link", "show"], capture_output=True, text=True, check=True).stdout):
            out[(ns, link["ifname"])] = link["ifindex"]
    return out


# name → (make the drift by hand, expected action (op, kind, key), state in `status`, changed link)
def _drifts(world, t: str):
    bridge, tap = f"vb-{t}-lan0", f"vt-{t}-vm2"
    return {
        "tap deleted": (lambda: _ip(world.host, "link", "del", tap), ("create", "tap", tap), "missing", tap),
        "bridge address removed": (
            lambda: _ip(world.host, "addr", "del", "192.168.223.1/24", "dev", bridge),
            ("create", "bridge_address", f"@host/{bridge}/192.168.223.1/24"), "missing", None,
        ),
        "nft table flushed": (
            lambda: subprocess.run(["ip", "netns", "exec", world.host, "nft", "flush", "table", "inet", f"vnet-{t}"], check=True),
            ("update", "ruleset", f"vnet-{t}"), "drift", None,
        ),
        "uplink forwarding off": (
            lambda: _write_sysctl(world.host, "net/ipv4/conf/eth0/forwarding", "0"),
            ("update", "sysctl", "@host/net/ipv4/conf/eth0/forwarding"), "drift", None,
        ),
    }


@pytest.mark.parametrize("drift", ["tap deleted", "bridge address removed", "nft table flushed", "uplink forwarding off"])
def test_drift_is_planned_marked_and_repaired_alone(world, tmp_path, drift):
    path = renamed(world, "nat.yaml", tmp_path, prefix="d")
    topo = spec.load(path)
    world.apply(topo)
    assert world.plan(topo).actions == []
    indexes = _indexes(world, topo)
    make, (op, kind, key), state, changed = _drifts(world, topo.name)[drift]
    make()

    actions = world.plan(topo).actions
    assert [(a.op, a.resource.kind, a.resource.key) for a in actions] == [(op, kind, key)], [a.describe() for a in actions]
    report = api.status(topo, netns=world.host, state_dir=world.state)
    assert not report["in_sync"]
    marked = [(r["kind"], r["name"], r["state"]) for r in report["resources"] if r["state"] != "ok"]
    assert marked == [(kind, key, state)]
    proc = run(world, "status", str(path))
    assert proc.returncode == 1 and state in proc.stdout

    repaired = world.apply(topo)
    assert [(a.op, a.resource.kind, a.resource.key) for a in repaired] == [(op, kind, key)]
    assert world.plan(topo).actions == []
    after = _indexes(world, topo)
    assert {k: v for k, v in after.items() if k[1] != changed} == {k: v for k, v in indexes.items() if k[1] != changed}
    # and the network works again
    assert check.ping(f"{topo.name}-c1", sandbox.WAN_ADDR)
    assert check.ping(f"{topo.name}-c1", "192.168.223.11")
