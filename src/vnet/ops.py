"""Operating a network: `vnet graph` and `vnet check` as Python calls (the CLI is a thin layer on
these).

    from vnet import ops, spec
    topo = spec.load("examples/forwards.yaml")
    print(ops.graph(topo, "mermaid"))                       # from the file alone
    print(ops.graph(topo, "svg", live=True, netns="t-host"))  # coloured by what is on the host
    report = ops.check(topo, netns="t-host")                # real traffic against the intent
    sys.exit(0 if report.ok else 1)
"""

from __future__ import annotations

from pathlib import Path

from vnet import check as _check
from vnet import graph as _graph
from vnet.engine import DEFAULT_STATE_DIR
from vnet.spec.models import Topology


def graph(topo: Topology, fmt: str = "mermaid", live: bool = False, netns: str | None = None,
          state_dir: Path | str = DEFAULT_STATE_DIR) -> str:
    """The topology drawn as `fmt` (mermaid, dot, svg, html); with `live`, coloured by the state of
    each object on the host (`api.status`): in sync, missing, drifted."""
    g = _graph.model(topo)
    if live:
        from vnet import api

        g = _graph.colour(g, api.status(topo, netns=netns, state_dir=state_dir))
    return _graph.render(g, fmt)


def check(topo: Topology, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR,
          outside: bool | str = True, timeout: float = 1.0) -> _check.Report:
    """Probe every pair of the topology's peers (ICMP, TCP, UDP) and a full-MTU don't-fragment
    echo per network, against what the file declares. `report.ok` is the exit status (0 when
    True); `report.to_json()` is `-o json`; `check.render(report)` prints the matrix.
    `outside`: True uses the sandbox's internet when `netns` is a sandbox host, a namespace
    name uses that one, False leaves the outside out."""
    return _check.run(topo, netns=netns, state_dir=state_dir, outside=outside, timeout=timeout)
