"""An element-only change of vnet's tables as a delta (nftrules.delta): what it deletes and adds
is exactly what differs between the two texts' sets, deletes first, in the texts' order; a change
of structure is no delta at all."""

from __future__ import annotations

import re

from vnet import nftrules
from vnet.facts import HostFacts
from vnet.spec import load_text

FACTS = HostFacts(default_uplink="eth0")

TOPOLOGY = """
name: fw
networks:
  lan:
    mode: nat
    subnet: 10.60.0.0/24
    subnet6: fd00:60::/64
    uplink: eth0
    forwards:
{forwards}
endpoints:
  web: {{kind: netns, network: lan, address: 10.60.0.10/24, address6: "fd00:60::10/64"}}
  db: {{kind: netns, network: lan, address: 10.60.0.11/24}}
"""


def _text(*forwards: str) -> str:
    topo = load_text(TOPOLOGY.format(forwards="\n".join(f"      - {f}" for f in forwards)))
    return nftrules.render(topo, FACTS).text


def _applied(old_text: str, script: str) -> dict:
    """The old text's sets with the script's element commands carried out, in order."""
    _, sets = nftrules.parse(old_text)
    sets = {k: list(v) for k, v in sets.items()}
    for line in script.splitlines():
        m = re.fullmatch(r"(add|delete) element (\w+) vnet-fw (\w+) \{ (.*) \}", line)
        assert m, line
        op, family, name, elements = m.groups()
        for e in elements.split(", "):
            if op == "add":
                assert e not in sets[(family, name)], f"added twice: {e}"
                sets[(family, name)].append(e)
            else:
                sets[(family, name)].remove(e)  # ValueError: deleted what was not there
    return sets


def test_a_delta_turns_the_old_sets_into_the_new_ones_touching_nothing_else():
    old = _text("{proto: tcp, port: 8080, to: 'web:80'}", "{proto: tcp, port: 9000-9003, to: web}", "{proto: udp, port: 5000, to: db}")
    new = _text("{proto: tcp, port: 8080, to: 'web:81'}", "{proto: tcp, port: 9000-9004, to: web}", "{proto: udp, port: 5000, to: db}")
    script = nftrules.delta("vnet-fw", old, new)
    assert script is not None
    _, want = nftrules.parse(new)
    got = _applied(old, script)
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}
    lines = script.strip().splitlines()
    ops = [line.split()[0] for line in lines]
    assert ops == sorted(ops, key=lambda op: op != "delete"), "every delete before any add"
    touched = {(line.split()[2], line.split()[4]) for line in lines}
    assert touched == {("inet", "generation"), ("inet", "forwards"), ("inet", "forwards6")}  # the udp forward's elements stay
    # 8080 now to port 81: its old elements go, on every ingress, in both families
    assert all(": 10.60.0.10 . 80" in e or ": fd00:60::10 . 80" in e
               for line in lines if line.startswith("delete element inet vnet-fw forwards")
               for e in line.split("{ ", 1)[1].rstrip(" }").split(", "))
    # and back: the reverse delta restores the old sets
    back = nftrules.delta("vnet-fw", new, old)
    _, was = nftrules.parse(old)
    assert {k: sorted(v) for k, v in _applied(new, back).items()} == {k: sorted(v) for k, v in was.items()}


def test_no_change_is_an_empty_delta_and_a_new_rule_is_none():
    text = _text("{proto: tcp, port: 8080, to: 'web:80'}")
    assert nftrules.delta("vnet-fw", text, text) == "\n"
    structure = text.replace("ct state established,related accept", "ct state established,related counter accept", 1)
    assert structure != text and nftrules.delta("vnet-fw", text, structure) is None
