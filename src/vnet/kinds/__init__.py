"""The table of resource kinds: one module per kind, one `register` line each.

Plan order is derived from each kind's `after`; a new kind (vxlan, frr …) is a module here plus
its line below, and nothing in the engine changes.
"""

from __future__ import annotations

from vnet.kinds.base import Ctx, Kind

REGISTRY: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    if kind.name in REGISTRY:
        raise ValueError(f"resource kind {kind.name!r} registered twice")
    REGISTRY[kind.name] = kind
    _order.clear()
    return kind


def get(name: str) -> Kind:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown resource kind {name!r}") from None


def by_role(role: str) -> Kind | None:
    for kind in REGISTRY.values():
        if role in kind.link_roles:
            return kind
    return None


_order: dict[str, int] = {}


def rank(name: str) -> int:
    """Creation order of a kind (deletion runs in reverse): a topological order of `after`,
    registration order between kinds that do not depend on each other."""
    if not _order:
        done: list[str] = []
        seen: set[str] = set()

        def visit(n: str, path: tuple[str, ...]) -> None:
            if n in seen:
                return
            if n in path:
                raise ValueError(f"resource kinds depend on each other in a circle: {' → '.join((*path, n))}")
            for dep in REGISTRY[n].after:
                if dep in REGISTRY:
                    visit(dep, (*path, n))
            seen.add(n)
            done.append(n)

        for n in REGISTRY:
            visit(n, ())
        _order.update({n: i for i, n in enumerate(done)})
    if name not in _order:
        raise ValueError(f"unknown resource kind {name!r}")
    return _order[name]


def closure(names: tuple[str, ...]) -> set[str]:
    """These kinds and every kind they need done before they start, directly or not: what a kind
    names in `starts_after` where it names anything there (all it needs), else its `after`."""
    out: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n not in out and n in REGISTRY:
            out.add(n)
            kind = REGISTRY[n]
            todo.extend(kind.after if kind.starts_after is None else kind.starts_after)
    return out


def ordered() -> list[Kind]:
    return sorted(REGISTRY.values(), key=lambda k: rank(k.name))


# the kinds, in the order a reader meets them on a host
from vnet.kinds import netns, links, vxlan, macvlan, qdisc, address, uplink, route, ruleset, snoop, iptables, sysctl, service, frr, vm, dhcpclient, bridgeconf  # noqa: E402

for _module in (netns, links, vxlan, macvlan, qdisc, address, uplink, route, ruleset, snoop, iptables, sysctl, service, frr, vm, dhcpclient, bridgeconf):
    for _kind in _module.KINDS:
        register(_kind)

__all__ = ["Ctx", "Kind", "REGISTRY", "by_role", "closure", "get", "ordered", "rank", "register"]
