"""Soak: SIGKILL at random times into apply and destroy of a mixed topology (nat with DHCP and a
forward, bridged, a tap, a netns endpoint, one QEMU guest), each followed by the next command,
which must recover: the host ends exactly as it was before the killed run, every time.

`make soak` runs 200 kills (VNET_SOAK_KILLS); CI runs a shorter version. The seed is printed, and
VNET_SOAK_SEED replays a run."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from vnet import sandbox, spec
from vnet.drivers import ns as nsmod
from vnet.drivers import process

from . import snapshot
from .test_recovery import VNET, daemons_of, run

KILLS = int(os.environ.get("VNET_SOAK_KILLS") or 12)

TOPOLOGY = """name: {name}
networks:
  nat0:
    mode: nat
    subnet: 192.168.91.0/24
    uplink: eth0
    dhcp: true
    forwards: [{{proto: tcp, port: 8080, to: "web:80"}}]
  lan:
    mode: bridged
    bridge: br{name}
    uplink: eth1
endpoints:
  web: {{kind: netns, network: nat0, address: 192.168.91.10/24}}
  t1: {{kind: tap, network: nat0}}
  c2: {{kind: netns, network: lan}}
{vms}"""
VM = """vms:
  v1: {image: tiny, memory: 128M, nics: [{network: nat0}]}
"""


def _second_nic(host: str, lan: str) -> None:
    """eth1 on the sandbox host, for the bridged network (eth0 is the nat network's uplink)."""
    subprocess.run(["ip", "-n", lan, "link", "add", "lan1", "type", "veth", "peer", "name", "eth1", "netns", host], check=True)
    subprocess.run(["ip", "-n", lan, "addr", "add", "198.51.100.1/24", "dev", "lan1"], check=True)
    subprocess.run(["ip", "-n", lan, "link", "set", "lan1", "up"], check=True)
    subprocess.run(["ip", "-n", host, "addr", "add", "198.51.100.2/24", "dev", "eth1"], check=True)
    subprocess.run(["ip", "-n", host, "link", "set", "eth1", "up"], check=True)


def _timed(world, command: str, path) -> float:
    t0 = time.monotonic()
    proc = run(world, command, str(path), timeout=180)
    assert proc.returncode == 0, proc.stderr
    return time.monotonic() - t0


def _half_made(name: str) -> list[str]:
    return [p.name for p in nsmod.NETNS_DIR.iterdir() if p.name.startswith(f"{name}-") and nsmod.half_made(p.name)]


def test_random_kills_into_apply_and_destroy_always_recover(world, tmp_path):
    qemu = shutil.which("qemu-system-x86_64") is not None
    if not qemu and os.environ.get("CI") == "true":
        pytest.fail("the soak needs qemu-system-x86_64 (make test installs it)")
    name = "sk" + secrets.token_hex(2)
    path = tmp_path / f"{name}.yaml"
    path.write_text(TOPOLOGY.format(name=name, vms=VM if qemu else ""))
    topo = spec.load(path)
    world.applied.add(name)
    _second_nic(world.host, world.sb.lan)
    sandbox.settle(world.host)
    before = snapshot.take(world.host)
    t_apply = _timed(world, "apply", path)
    sandbox.settle(world.host)
    applied = snapshot.take(world.host)
    daemons_applied = len(daemons_of(world, name))
    t_destroy = _timed(world, "destroy", path)
    sandbox.settle(world.host)
    assert snapshot.take(world.host) == before

    seed = int(os.environ.get("VNET_SOAK_SEED") or secrets.randbits(32))
    print(f"soak: seed {seed}, {KILLS} kills; a clean apply takes {t_apply:.2f}s, a destroy {t_destroy:.2f}s")
    rng = random.Random(seed)
    present = False
    kills = inside = 0
    while kills < KILLS:
        command = "destroy" if present else "apply"
        delay = rng.uniform(0.02, 1.1 * (t_destroy if present else t_apply))
        proc = subprocess.Popen([VNET, "--netns", world.host, "--state-dir", str(world.state), command, str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        world.procs.append(proc)
        try:
            _, err = proc.communicate(timeout=delay)
            assert proc.returncode == 0, f"{command} failed without a kill: {err}"
            present = not present  # it finished before the kill: the next round kills the other command
            continue
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        kills += 1
        journal = world.state_of(name) / "journal.jsonl"
        inside += journal.exists()
        where = f"kill {kills} (seed {seed}) {delay:.2f}s into {command}"
        if command == "apply":
            # the next command, whatever it is, puts the host back as it was before the killed apply
            # — unless the kill came after the apply committed (its journal gone): then it is applied
            journaled = journal.exists()
            proc = run(world, "plan", str(path), timeout=180)
            assert proc.returncode == 0, f"{where}: {proc.stderr}"
            sandbox.settle(world.host)
            now = snapshot.take(world.host)
            present = not journaled and now == applied
            if present:
                assert len(daemons_of(world, name)) == daemons_applied, f"{where}: daemons missing after a committed apply"
            else:
                assert now == before, f"{where}: the host was not put back (journal {'left' if journaled else 'none'})"
                left = {p: Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:160] for p in daemons_of(world, name)}
                assert not left, f"{where}: daemons left running: {left}"
        else:
            # the destroy is undone, and apply (a guest stopped by the killed run is started from the
            # topology, never from a recorded command line) brings everything back
            proc = run(world, "apply", str(path), timeout=180)
            assert proc.returncode == 0, f"{where}: {proc.stderr}"
            sandbox.settle(world.host)
            assert snapshot.take(world.host) == applied, f"{where}: the host was not put back"
            assert len(daemons_of(world, name)) == daemons_applied, f"{where}: daemons missing"
        assert _half_made(name) == [], f"{where}: half-made namespace files"
        assert not journal.exists()
    print(f"soak: {kills} kills, {inside} of them inside a run (journal left), all recovered")
    if present:
        world.destroy(name)
    assert snapshot.take(world.host) == before
    assert all(process.is_gone(p.pid) for p in world.procs)
