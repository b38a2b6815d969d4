"""`vnet graph`: the model from the file, Mermaid and dot text, SVG through Graphviz."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vnet import graph, spec
from vnet.spec.validate import load_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"
ALL = sorted(p.name for p in EXAMPLES.glob("*.yaml"))

_NODE = re.compile(r'^\s*([A-Za-z0-9_]+)(\(\("|\{\{"|\["|\("|\[/")(.*?)("\)\)|"\}\}|"\]|"\)|"/\])\s*$')
_EDGE = re.compile(r'^\s*([A-Za-z0-9_]+) (---|==>|-\.->)(?:\|"(.*?)"\|)? ([A-Za-z0-9_]+)\s*$')


def parse_mermaid(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]], dict[str, list[str]]]:
    """(node id → label, [(src, dst, label)], subgraph → member ids) of vnet's Mermaid text; any
    line it does not understand fails the test."""
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    groups: dict[str, list[str]] = {}
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    current = None
    for line in lines[1:]:
        s = line.strip()
        if not s or s.startswith("%%") or s.startswith(("classDef ", "class ", "linkStyle ")):
            continue
        if s.startswith("subgraph "):
            current = s.split()[1].split("[")[0]
            groups[current] = []
        elif s == "end":
            current = None
        elif m := _NODE.match(line):
            assert m.group(1) not in nodes, f"node {m.group(1)} twice"
            nodes[m.group(1)] = html.unescape(m.group(3).replace("<br/>", "\n"))
            if current:
                groups[current].append(m.group(1))
        elif m := _EDGE.match(line):
            edges.append((m.group(1), m.group(4), html.unescape(m.group(3) or "")))
        else:
            raise AssertionError(f"not a line of vnet's Mermaid: {line!r}")
    return nodes, edges, groups


@pytest.mark.parametrize("example", ALL)
def test_mermaid_has_every_node_and_edge(example):
    topo = spec.load(EXAMPLES / example)
    g = graph.model(topo)
    nodes, edges, groups = parse_mermaid(graph.mermaid(g))
    assert nodes == {n.id: n.label for n in g.nodes}
    assert edges == [(e.src, e.dst, e.label) for e in g.edges]
    assert all(src in nodes and dst in nodes for src, dst, _ in edges)
    # and the graph has what the file declares
    labels = "\n".join(nodes.values())
    for net_name in topo.networks:
        assert f"network {net_name}" in labels
        assert f"net_{net_name}" in groups
    for name in (*topo.endpoints, *topo.vms):
        assert any(name in label.splitlines()[0] for label in nodes.values()), name
    for vm_name, vm in topo.vms.items():
        assert sum(1 for s, _, _ in edges if s == f"vm_{vm_name}") == len(vm.nics)
    n_forwards = sum(len(n.forwards) for n in topo.networks.values())
    assert sum(1 for *_, label in edges if label.startswith("forward ")) == n_forwards
    assert sum(1 for *_, label in edges if label.startswith("allow ")) == len(topo.allow)


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz (make setup installs it)")
@pytest.mark.parametrize("example", ALL)
def test_dot_accepts_the_dot_output(example):
    g = graph.model(spec.load(EXAMPLES / example))
    proc = subprocess.run(["dot", "-Tsvg"], input=graph.dot(g), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warnings either
    assert "<svg" in proc.stdout
    for n in g.nodes:
        assert f"<title>{n.id}</title>" in proc.stdout
    page = graph.render(g, "html")
    assert page.startswith("<!doctype html>") and "<svg" in page and "<?xml" not in page


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_golden_forwards(fmt):
    """examples/forwards.yaml, drawn; to accept a deliberate change: VNET_GOLDEN=update."""
    text = graph.render(graph.model(spec.load(EXAMPLES / "forwards.yaml")), fmt)
    golden = GOLDEN / f"forwards.{'mmd' if fmt == 'mermaid' else 'dot'}"
    if os.environ.get("VNET_GOLDEN") == "update":
        golden.write_text(text)
    assert text == golden.read_text()


def test_live_colours_by_the_worst_state_of_what_a_node_stands_for():
    topo = spec.load(EXAMPLES / "forwards.yaml")
    g = graph.model(topo)
    status = {"in_sync": False, "resources": [
        {"kind": "bridge", "name": "vb-fwd-lan0", "state": "ok"},
        {"kind": "bridge_address", "name": "@host/vb-fwd-lan0/192.168.70.1/24", "state": "drift"},
        {"kind": "veth", "name": "ve-fwd-web", "state": "ok"},
        {"kind": "netns", "name": "fwd-web", "state": "ok"},
        {"kind": "address", "name": "fwd-web/eth0/192.168.70.10/24", "state": "ok"},
        {"kind": "ruleset", "name": "vnet-fwd", "state": "ok"},
    ]}
    live = graph.colour(g, status)
    assert live.node("br_lan0").status == "drift"
    assert live.node("ep_web").status == "ok"
    assert live.node("ep_peer").status == "missing"  # nothing of it on the host
    assert live.node("host").status is None  # stands for nothing vnet makes
    assert {e.status for e in live.edges if e.kind == "forward"} == {"ok"}
    text = graph.mermaid(live)
    assert "class br_lan0 drift" in text and graph.COLOURS["missing"] in text
    assert 'color="#ef6c00"' in graph.dot(live)


def test_ids_stay_safe_and_distinct_for_any_name():
    topo = load_text("""
name: ids
networks:
  a-b: {mode: host, subnet: 10.1.0.0/24}
  a_b: {mode: host, subnet: 10.2.0.0/24}
endpoints:
  x-1: {kind: netns, network: a-b, address: 10.1.0.10/24}
  x_1: {kind: netns, network: a_b, address: 10.2.0.10/24}
""")
    g = graph.model(topo)
    ids = [n.id for n in g.nodes]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", i) for i in ids)
    parse_mermaid(graph.mermaid(g))


def test_unknown_format_is_refused():
    from vnet.errors import VnetError

    with pytest.raises(VnetError, match="--format 'png' is not known"):
        graph.render(graph.model(spec.load(EXAMPLES / "nat.yaml")), "png")
