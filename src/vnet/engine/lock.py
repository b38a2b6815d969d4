"""Locks and claims.

Locks (taken with vnet/flock.py): one per topology (a second run waits, saying for whom, or gives up after
VNET_LOCK_TIMEOUT seconds), and a short one per target namespace, held while a topology claims
its subnets, bridges and uplinks (so two topologies applied at once cannot both take the same
range) and while state shared between topologies (forwarding sysctls, iptables) changes.

Claims: what a topology takes in a target namespace, recorded in its state directory, so that
another topology cannot take it too while the first one still has objects there.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Iterator

from vnet import statedir
from vnet.errors import Problem
from vnet.facts import bridge_name
from vnet.flock import held
from vnet.spec.models import Topology
from vnet.spec.validate import addressing
from vnet.values import Record


class Claim(Record):
    """What a topology holds in its target: subnets, bridges, uplinks, and the file it came from."""

    __slots__ = ("netns", "subnets", "bridges", "uplinks", "source")
    netns: str
    subnets: dict[str, str]  # network → subnet; "<network>.subnet6" → subnet6
    bridges: dict[str, str]  # network → bridge
    uplinks: dict[str, str]  # network → NIC (bridged)
    source: str | None  # the file it was applied from, when known

    def __init__(self, netns: str, subnets: dict[str, str] | None = None, bridges: dict[str, str] | None = None,
                 uplinks: dict[str, str] | None = None, source: str | None = None) -> None:
        self.netns = netns
        self.subnets = {} if subnets is None else subnets
        self.bridges = {} if bridges is None else bridges
        self.uplinks = {} if uplinks is None else uplinks
        self.source = source

    def to_json(self) -> dict:
        return {"netns": self.netns, "subnets": self.subnets, "bridges": self.bridges, "uplinks": self.uplinks, "source": self.source}

    @classmethod
    def of(cls, topo: Topology, netns: str | None, source: str | None = None) -> Claim:
        c = cls(netns or "", source=source)
        for net_name, net in topo.networks.items():
            c.bridges[net_name] = bridge_name(topo, net_name)
            if net.mode in ("host", "nat") and net.subnet:
                c.subnets[net_name] = str(addressing(topo, net_name).subnet)
            if net.mode in ("host", "nat") and net.subnet6:
                c.subnets[f"{net_name}.subnet6"] = str(ipaddress.ip_network(net.subnet6))
            if net.mode == "bridged" and net.uplink:
                c.uplinks[net_name] = net.uplink
        return c


class Claims:
    """The claims of every topology under one state directory, seen from one of them."""

    def __init__(self, state_root: Path, topology: str, netns: str | None):
        self.root = state_root
        self.topology = topology
        self.netns = netns or ""

    def file(self, topology: str) -> Path:
        return self.root / topology / "claim.json"

    def read(self, topology: str) -> Claim | None:
        try:
            data = json.loads(self.file(topology).read_text())
            return Claim(data["netns"], data["subnets"], data["bridges"], data["uplinks"], data.get("source"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, claim: Claim) -> None:
        """Write the topology's claim; a claim that is there already as it is stays (a no-op apply
        would otherwise make a new file each time: 1-3 ms on this machine's ext4)."""
        path = self.file(self.topology)
        text = json.dumps(claim.to_json(), sort_keys=True)
        try:
            if path.read_text() == text:
                return
        except (OSError, UnicodeDecodeError):
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)

    def alive(self, other: str, obs) -> bool:
        """A claim counts while its topology has objects here, a journal, or a run in progress."""
        return (
            statedir.journal(self.root, other).exists()
            or any(li.mark and li.mark[0] == other for li in obs.links.values())
            or held(statedir.topology_lock(self.root, other))
        )

    def others(self, obs=None) -> Iterator[tuple[str, Claim]]:
        """(topology, claim) of the other topologies in the same target namespace; with an
        observation, only those whose claim is alive."""
        try:
            dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != self.topology)
        except FileNotFoundError:
            return
        for d in dirs:
            claim = self.read(d.name)
            if claim is not None and claim.netns == self.netns and (obs is None or self.alive(d.name, obs)):
                yield d.name, claim

    def identity_problems(self, source: str | None, obs) -> list[Problem]:
        """A topology's name is not its identity: another file that happens to use the same
        `name:` must not take over (and delete) what the first one built here."""
        mine = self.read(self.topology)
        if source is None or mine is None or mine.source is None or mine.source == source:
            return []
        if not self.alive(self.topology, obs):
            return []  # nothing of it left here: a stale claim
        return [Problem("name", f"topology {self.topology!r} in this namespace was applied from {mine.source}, not from {source}",
                        f"give this file another name:, destroy {self.topology} first, or pass --force to take it over")]

    def problems(self, topo: Topology, obs) -> list[Problem]:
        mine = Claim.of(topo, self.netns)
        problems = []
        for other, claim in self.others(obs):
            for key, subnet in mine.subnets.items():
                mine_net = ipaddress.ip_network(subnet)
                for okey, osubnet in claim.subnets.items():
                    theirs = ipaddress.ip_network(osubnet)
                    if mine_net.version == theirs.version and mine_net.overlaps(theirs):
                        where = key if "." in key else f"{key}.subnet"
                        problems.append(Problem(f"networks.{where}", f"{subnet} overlaps {osubnet}, claimed by topology {other!r} (network {okey.split('.')[0]})", f"choose a free range, or destroy topology {other} first"))
            for net, br in mine.bridges.items():
                if br in claim.bridges.values():
                    problems.append(Problem(f"networks.{net}.bridge", f"bridge {br} is claimed by topology {other!r}", "name another bridge"))
            for net, up in mine.uplinks.items():
                if up in claim.uplinks.values():
                    problems.append(Problem(f"networks.{net}.uplink", f"{up} is the uplink of topology {other!r} already", "a NIC joins one bridge only"))
        return problems
