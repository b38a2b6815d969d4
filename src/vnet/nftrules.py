"""The nftables ruleset of one topology, rendered as text for `nft -f`. Pure.

All of a topology's rules live in one table, `inet vnet-<topology>`, that vnet owns whole: apply
replaces it in a single transaction, destroy deletes it, and nothing else on the host is touched.
Base chains use policy accept, so vnet never decides for traffic that is not its own.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from vnet import names
from vnet.spec.validate import addressing

if TYPE_CHECKING:
    from vnet.desired import HostFacts
    from vnet.spec.models import Topology


def _q(name: str) -> str:
    # names were validated to [A-Za-z0-9_.-]; json quoting is the belt to those braces
    return json.dumps(name)


def render(topo: Topology, facts: HostFacts) -> tuple[str, str, int] | None:
    """(ruleset text, digest, rule count) or None when the topology needs no rules.

    The digest of the rules is written into the table's comment, so observing the table tells
    whether it still holds what this topology wants; the rule count catches a hand-made flush."""
    from vnet.desired import bridge_name, uplink_of

    forward: list[str] = []
    input_: list[str] = []
    postrouting: list[str] = []
    for net_name, net in topo.networks.items():
        br = _q(bridge_name(topo, net_name))
        if net.mode == "bridged":
            continue
        # with br_netfilter loaded (Docker loads it), frames switched inside the bridge pass the
        # inet forward hook with the bridge as both in and out device: they must stay untouched
        forward.append(f"iifname {br} oifname {br} accept")
        if net.mode == "nat":
            up = _q(uplink_of(topo, net_name, facts) or "")
            subnet = addressing(topo, net_name).subnet
            forward += [
                f"iifname {br} oifname {up} accept",
                f"iifname {up} oifname {br} ct state established,related accept",
            ]
            postrouting.append(f"ip saddr {subnet} ip daddr != {subnet} oifname {up} masquerade")
        if net.mode == "isolated":
            # no address of the host's may answer on an isolated bridge, whatever a guest configures
            input_.append(f"iifname {br} drop")
        # everything else in or out of a vnet bridge is not forwarded: no reach beyond the network
        forward += [f"iifname {br} drop", f"oifname {br} drop"]
    if not (forward or input_ or postrouting):
        return None

    table = names.nft_table(topo.name)
    lines: list[str] = []

    def chain(name: str, hook: str, prio: str, rules: list[str], kind: str = "filter") -> None:
        if not rules:
            return
        lines.append(f"  chain {name} {{")
        lines.append(f"    type {kind} hook {hook} priority {prio}; policy accept;")
        lines.extend(f"    {r}" for r in rules)
        lines.append("  }")

    chain("forward", "forward", "filter", forward)
    chain("input", "input", "filter", input_)
    chain("postrouting", "postrouting", "srcnat", postrouting, kind="nat")
    body = "\n".join(lines)
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    text = f'table inet {table} {{\n  comment "{table_comment(topo.name, digest)}"\n{body}\n}}\n'
    return text, digest, len(forward) + len(input_) + len(postrouting)


def table_comment(topology: str, digest: str) -> str:
    return f"{names.MARK}:{topology}:{digest}"


def parse_table_comment(comment: str | None) -> tuple[str, str] | None:
    """(topology, digest) of a vnet table's comment, None for a table vnet did not make."""
    fields = (comment or "").split(":")
    if len(fields) != 3 or fields[0] != names.MARK:
        return None
    return fields[1], fields[2]
