"""A no-op apply writes nothing it would write the same: the claim and the source record stay the
files they were (each rewrite was a new file); an apply that changes something records anew."""

from __future__ import annotations

import json
import os
import subprocess

from vnet import api


def _files(world, topo):
    d = world.state_of(topo.name)
    return {name: (os.stat(d / name).st_ino, (d / name).read_text()) for name in ("claim.json", "source.json")}


def test_a_noop_apply_rewrites_neither_claim_nor_source(world):
    topo = world.load("nat.yaml")
    world.apply(topo)
    before = _files(world, topo)
    assert api.apply(topo, netns=world.host, state_dir=world.state) == []
    assert _files(world, topo) == before  # the same files (inodes), the same text

    subprocess.run(["ip", "-n", f"{topo.name}-c1", "route", "del", "default"], check=True)
    assert api.apply(topo, netns=world.host, state_dir=world.state) != []
    after = _files(world, topo)
    assert after["source.json"][0] != before["source.json"][0]  # recorded anew: a change was made
    assert json.loads(after["source.json"][1])["applied_at"] >= json.loads(before["source.json"][1])["applied_at"]
    assert after["claim.json"] == before["claim.json"]  # the claim is what it was
