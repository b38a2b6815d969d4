"""`vnet graph`: a topology drawn as networks, bridges, uplinks, endpoints, VMs, forwards and
`allow:` rules. A pure function builds a graph model from the spec (`model`); renderers turn it
into Mermaid or Graphviz dot text; SVG comes from Graphviz itself (`dot -Tsvg`), and HTML is a
page around that SVG. `--live` colours each node and edge by the state of the resources it stands
for (in sync, missing, drifted), as `vnet status` reports them.

    python -m vnet.graph FILE [--format mermaid|dot|svg|html]
"""

from __future__ import annotations

import html
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace

from vnet import names, qemuargs
from vnet.errors import VnetError
from vnet.resources import ns_key
from vnet.spec.models import MacvlanSpec, NetnsSpec, TapSpec, Topology, TunSpec, port_span
from vnet.spec.validate import addressing, forward_target, known_address

FORMATS = ("mermaid", "dot", "svg", "html")
STATES = ("ok", "drift", "missing")  # worst last
COLOURS = {"ok": "#2e7d32", "drift": "#ef6c00", "missing": "#c62828", None: "#37474f"}
FILLS = {"ok": "#e8f5e9", "drift": "#fff3e0", "missing": "#ffebee", None: "#ffffff"}


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # host | internet | uplink | bridge | endpoint | vm
    label: str  # lines joined by "\n"
    group: str | None = None  # the network a node belongs to (drawn as a cluster / subgraph)
    resources: tuple[tuple[str, str], ...] = ()  # (kind, key) of what vnet makes for it
    status: str | None = None


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    kind: str  # port | gateway | uplink | allow | forward
    label: str = ""
    resources: tuple[tuple[str, str], ...] = ()
    status: str | None = None


@dataclass
class Graph:
    title: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    groups: dict[str, str] = field(default_factory=dict)  # group id -> label

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)


def _id(prefix: str, name: str) -> str:
    """A node id safe in Mermaid and dot: letters, digits and '_' (others as _xx)."""
    return prefix + "_" + "".join(c if c.isalnum() else f"_{ord(c):02x}" for c in name)


def model(topo: Topology) -> Graph:
    """The graph of a topology, from the file alone."""
    from vnet.facts import bridge_name

    t = topo.name
    g = Graph(f"vnet topology {t}")
    g.nodes.append(Node("host", "host", "host"))
    ruleset = (("ruleset", names.nft_table(t)),)
    uplinks: dict[str, str] = {}

    def uplink(name: str | None) -> str:
        key = name or "(default route)"
        if key not in uplinks:
            uplinks[key] = _id("up", key)
            label = f"uplink {name}" if name else "uplink\n(the default route's)"
            g.nodes.append(Node(uplinks[key], "uplink", label))
        return uplinks[key]

    bridges: dict[str, str] = {}
    for net_name, net in topo.networks.items():
        br = bridge_name(topo, net_name)
        nid = bridges[net_name] = _id("br", net_name)
        group = _id("net", net_name)
        addr = addressing(topo, net_name)
        desc = [f"network {net_name}", f"{net.mode}" + (f" {net.subnet}" if net.subnet else ""), f"bridge {br}"]
        if net.mtu:
            desc.append(f"mtu {net.mtu}")
        services = [s for s, on in (("dhcp", net.dhcp), ("dns", net.dns)) if on is not None]
        if services:
            desc.append(" + ".join(services) + " (dnsmasq)")
        g.groups[group] = f"{net_name} ({net.mode})"
        res = [("bridge", br)]
        if addr.gateway is not None and addr.subnet is not None:
            res.append(("bridge_address", ns_key("", br, f"{addr.gateway}/{addr.subnet.prefixlen}")))
        if services:
            res.append(("service", f"dnsmasq-{net_name}"))
        g.nodes.append(Node(nid, "bridge", "\n".join(desc), group, tuple(res)))
        if addr.gateway is not None:
            g.edges.append(Edge(nid, "host", "gateway", f"gateway {addr.gateway}"))
        if net.mode == "nat":
            g.edges.append(Edge(nid, uplink(net.uplink), "uplink", "nat (masquerade)", ruleset))
        elif net.mode == "bridged":
            g.edges.append(Edge(nid, uplink(net.uplink), "uplink", "member port", (("uplink", net.uplink or ""),)))

    for ep_name, ep in topo.endpoints.items():
        nid = _id("ep", ep_name)
        if isinstance(ep, NetnsSpec):
            ns = names.endpoint_netns(t, ep_name, ep.netns)
            lines = [ep_name, f"netns {ns}", ep.address or ("address by DHCP (vnet's client)" if ep.dhcp else "address by DHCP")]
            res = [("veth", names.veth_host(t, ep_name))]
            if ep.netns is None:
                res.append(("netns", ns))
            if ep.address:
                res.append(("address", ns_key(ns, ep.ifname, ep.address)))
            port = names.veth_host(t, ep_name)
        elif isinstance(ep, MacvlanSpec):
            ns = names.endpoint_netns(t, ep_name, ep.netns)
            lines = [ep_name, f"macvlan ({ep.mode}) on {ep.uplink}", f"netns {ns}",
                     "address by DHCP" if ep.dhcp else (ep.address or "no address")]
            res = [("macvlan", ns)] + ([("netns", ns)] if ep.netns is None else [])
            g.nodes.append(Node(nid, "endpoint", "\n".join(lines), None, tuple(res)))
            g.edges.append(Edge(nid, uplink(ep.uplink), "uplink", f"macvlan {ep.mode}", (("uplink", ep.uplink),)))
            continue
        elif isinstance(ep, TapSpec):
            port = names.endpoint_tap(t, ep_name, ep.ifname)
            lines = [ep_name, f"tap {port}"] + ([f"owner {ep.owner}"] if ep.owner is not None else [])
            res = [("tap", port)]
        else:
            assert isinstance(ep, TunSpec)
            port = names.endpoint_tap(t, ep_name, ep.ifname)
            lines = [ep_name, f"tun {port}"] + ([ep.address] if ep.address else [])
            res = [("tap", port)] + ([("address", ns_key("", port, ep.address))] if ep.address else [])
        policy = _policy(ep)
        if policy:
            lines.append(policy)
        network = getattr(ep, "network", None)
        g.nodes.append(Node(nid, "endpoint", "\n".join(lines), _id("net", network) if network else None, tuple(res)))
        if network:
            g.edges.append(Edge(nid, bridges[network], "port", port))
        else:
            g.edges.append(Edge(nid, "host", "port", port))

    for vm_name, vm in topo.vms.items():
        nid = _id("vm", vm_name)
        boot = vm.image and f"image {vm.image}" or (vm.disk and f"disk {vm.disk}") or "kernel"
        groups = {n.network for n in vm.nics}
        group = _id("net", vm.nics[0].network) if len(groups) == 1 else None
        taps = tuple(("tap", qemuargs.nic_tap(topo, vm_name, i)) for i in range(len(vm.nics)))
        g.nodes.append(Node(nid, "vm", f"VM {vm_name}\n{boot}, {vm.memory}, {vm.cpus} cpu", group, (("vm", vm_name), *taps)))
        for i, nic in enumerate(vm.nics):
            label = qemuargs.nic_tap(topo, vm_name, i) + (f" {nic.address}" if nic.address else "")
            policy = _policy(nic)
            g.edges.append(Edge(nid, bridges[nic.network], "port", label + (f" ({policy})" if policy else ""), (taps[i],)))

    for net_name, net in topo.networks.items():
        for i, fwd in enumerate(net.forwards):
            address, to_port = forward_target(topo, net_name, fwd.to)
            target = fwd.to.partition(":")[0]
            if target[0].isdigit():
                target = _owner(topo, net_name, str(address)) or target
            lo, hi = port_span(fwd.port)
            dst = _id("ep", target) if target in topo.endpoints else _id("vm", target) if target in topo.vms else None
            if dst is None:  # an address nothing in the file names
                dst = _id("addr", str(address))
                if all(n.id != dst for n in g.nodes):
                    g.nodes.append(Node(dst, "endpoint", str(address), _id("net", net_name)))
            ports = str(fwd.port) + (f" → {to_port}" if to_port else "")
            g.edges.append(Edge(uplink(net.uplink), dst, "forward", f"forward {fwd.proto} {ports}", ruleset))

    for rule in topo.allow:
        what = rule.proto or "any"
        if rule.ports:
            what += " " + ",".join(str(p) for p in rule.ports)
        g.edges.append(Edge(bridges[rule.from_], bridges[rule.to], "allow", f"allow {what}", ruleset))
    return g


def _policy(port) -> str:
    out = []
    if getattr(port, "isolated", False):
        out.append("isolated")
    if getattr(port, "spoofing", "deny") == "allow":
        out.append("spoofing allowed")
    if getattr(port, "rate", None):
        out.append(f"rate {port.rate}")
    return ", ".join(out)


def _owner(topo: Topology, network: str, address: str) -> str | None:
    for name in (*topo.endpoints, *topo.vms):
        ip = known_address(topo, name, network)
        if ip is not None and str(ip) == address:
            return name
    return None


def colour(g: Graph, status: dict) -> Graph:
    """The graph with each node and edge coloured by the worst state of its resources, from the
    rows of `api.status` ({kind, name, state}); things with no resources of their own stay plain."""
    state = {(r["kind"], r["name"]): r["state"] for r in status.get("resources", [])}

    def worst(res: tuple[tuple[str, str], ...]) -> str | None:
        found = [state.get(r, "missing") for r in res]
        found = [s if s in STATES else "drift" for s in found]  # 'extra' cannot be wanted: count as drift
        return max(found, key=STATES.index) if found else None

    g2 = Graph(g.title + (" (live: in sync)" if status.get("in_sync") else " (live: not in sync)"), groups=dict(g.groups))
    g2.nodes = [replace(n, status=worst(n.resources)) for n in g.nodes]
    g2.edges = [replace(e, status=worst(e.resources)) for e in g.edges]
    return g2


# --- renderers -----------------------------------------------------------------------------------

_MERMAID_SHAPES = {"host": ('(("', '"))'), "uplink": ('{{"', '"}}'), "bridge": ('["', '"]'), "endpoint": ('("', '")'),
                   "vm": ('[/"', '"/]'), "internet": ('(("', '"))')}
_MERMAID_ARROWS = {"port": "---", "gateway": "---", "uplink": "---", "allow": "==>", "forward": "-.->"}


def _mermaid_text(text: str) -> str:
    return html.escape(text, quote=True).replace("\n", "<br/>")


def mermaid(g: Graph) -> str:
    """Mermaid flowchart text: one line per node, one per edge; networks as subgraphs."""
    out = ["flowchart LR", f"  %% {g.title}"]

    def node_line(n: Node, indent: str) -> str:
        a, b = _MERMAID_SHAPES[n.kind]
        return f"{indent}{n.id}{a}{_mermaid_text(n.label)}{b}"

    for n in g.nodes:
        if n.group is None:
            out.append(node_line(n, "  "))
    for gid, label in g.groups.items():
        members = [n for n in g.nodes if n.group == gid]
        out.append(f'  subgraph {gid}["{_mermaid_text(label)}"]')
        out += [node_line(n, "    ") for n in members]
        out.append("  end")
    for e in g.edges:
        arrow = _MERMAID_ARROWS[e.kind]
        label = f'|"{_mermaid_text(e.label)}"|' if e.label else ""
        out.append(f"  {e.src} {arrow}{label} {e.dst}")
    used = sorted({s for s in (*(n.status for n in g.nodes), *(e.status for e in g.edges)) if s})
    for s in used:
        out.append(f"  classDef {s} fill:{FILLS[s]},stroke:{COLOURS[s]},stroke-width:2px")
        ids = [n.id for n in g.nodes if n.status == s]
        if ids:
            out.append(f"  class {','.join(ids)} {s}")
    for i, e in enumerate(g.edges):
        if e.status:
            out.append(f"  linkStyle {i} stroke:{COLOURS[e.status]},stroke-width:2px")
    return "\n".join(out) + "\n"


_DOT_SHAPES = {"host": "doubleoctagon", "uplink": "hexagon", "bridge": "box", "endpoint": "box", "vm": "box3d", "internet": "ellipse"}
_DOT_STYLES = {"port": "", "gateway": "", "uplink": "", "allow": "bold", "forward": "dashed"}


def _dq(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dot(g: Graph) -> str:
    """Graphviz dot text; networks are clusters."""
    out = [f"graph {_dq(g.title)} {{", "  rankdir=LR;", f"  label={_dq(g.title)};",
           '  node [fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica", fontsize=9];']

    def node_line(n: Node, indent: str) -> str:
        style = "rounded,filled" if n.kind == "endpoint" else "filled"
        attrs = [f"label={_dq(n.label)}", f"shape={_DOT_SHAPES[n.kind]}", f'style="{style}"',
                 f'fillcolor="{FILLS[n.status]}"', f'color="{COLOURS[n.status]}"']
        if n.status:
            attrs.append(f'tooltip="{n.status}"')
        return f"{indent}{n.id} [{', '.join(attrs)}];"

    for n in g.nodes:
        if n.group is None:
            out.append(node_line(n, "  "))
    for gid, label in g.groups.items():
        out.append(f"  subgraph cluster_{gid} {{")
        out.append(f"    label={_dq(label)}; style=rounded; color=\"#90a4ae\";")
        out += [node_line(n, "    ") for n in g.nodes if n.group == gid]
        out.append("  }")
    for e in g.edges:
        attrs = [f"label={_dq(e.label)}"] if e.label else []
        if _DOT_STYLES[e.kind]:
            attrs.append(f"style={_DOT_STYLES[e.kind]}")
        if e.kind in ("allow", "forward"):
            attrs.append("dir=forward")
        if e.status:
            attrs.append(f'color="{COLOURS[e.status]}"')
        out.append(f"  {e.src} -- {e.dst}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    out.append("}")
    return "\n".join(out) + "\n"


def svg(g: Graph) -> str:
    """SVG drawn by Graphviz from the dot text."""
    exe = shutil.which("dot")
    if exe is None:
        raise VnetError("svg and html need Graphviz's dot: apt-get install graphviz (or use --format dot or mermaid)")
    proc = subprocess.run([exe, "-Tsvg"], input=dot(g), capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise VnetError(f"dot -Tsvg failed: {proc.stderr.strip()}")
    return proc.stdout


def page(g: Graph) -> str:
    """A self-contained HTML page embedding the SVG, with a legend for --live colours."""
    body = svg(g)
    body = body[body.find("<svg"):]  # drop the XML prolog and doctype: inline SVG in HTML5
    legend = "".join(
        f'<span style="border:2px solid {COLOURS[s]};background:{FILLS[s]};padding:2px 6px;margin-right:6px">{s}</span>'
        for s in STATES
    )
    title = html.escape(g.title)
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{title}</title></head>\n<body style=\"font-family:sans-serif\">\n<h1>{title}</h1>\n"
        f"<p>{legend} — dashed: port forwards, bold: <code>allow:</code> rules</p>\n{body}\n</body></html>\n"
    )


def render(g: Graph, fmt: str) -> str:
    if fmt not in FORMATS:
        raise VnetError(f"--format {fmt!r} is not known: use one of {', '.join(FORMATS)}")
    return {"mermaid": mermaid, "dot": dot, "svg": svg, "html": page}[fmt](g)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from vnet import ops, spec
    from vnet.errors import SpecError

    p = argparse.ArgumentParser(prog="python -m vnet.graph", description="draw a topology")
    p.add_argument("file")
    p.add_argument("--format", default="mermaid", choices=FORMATS)
    p.add_argument("--live", action="store_true")
    p.add_argument("--netns")
    p.add_argument("--state-dir", default="/run/vnet")
    a = p.parse_args(argv)
    try:
        topo = spec.load(a.file)
        sys.stdout.write(ops.graph(topo, a.format, live=a.live, netns=a.netns, state_dir=a.state_dir))
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 2
    except VnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
