"""Topology → the set of resources the host should hold. Pure: no I/O.

Each resource kind says what it wants of the topology (kinds/*.py, `desired`); this gathers them.
The only facts taken from the host are passed in (`HostFacts`), so the function can be tested
without root and the same inputs always give the same resources.
"""

from __future__ import annotations

from vnet import kinds, overlay
from vnet.facts import HostFacts
from vnet.resources import Resource
from vnet.spec.models import Topology


def desired(topo: Topology, facts: HostFacts = HostFacts()) -> list[Resource]:
    out: list[Resource] = []
    topo, facts = overlay.localize(topo, facts)  # with `hosts:`, this host's part
    for kind in kinds.ordered():
        out += kind.desired(topo, facts)
    return out
