"""`vnet doctor`: explain, in plain words, host settings that get in the way of vnet's networks.

Read-only. Each finding says what was found, what it does to vnet's traffic, and what vnet does
about it (or what the user can do). Looks at: iptables' FORWARD policy (Docker sets DROP),
br_netfilter (bridged frames then cross the IP firewall), foreign nftables tables whose forward
hooks drop, host-wide forwarding, a kernel without nftables flowtables (no offload), and journals
of interrupted vnet runs. (Asking about flowtables may load the kernel's module for them.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vnet import names
from vnet.drivers import iptables, sysctl
from vnet.drivers.ns import Namespace


@dataclass(frozen=True)
class Finding:
    topic: str  # short key: forward-drop, br-netfilter, nft-drop, ip-forward, flowtables, journal
    level: str  # "warning": it can break traffic; "info": worth knowing
    title: str
    explanation: str

    def text(self) -> str:
        return f"[{self.level}] {self.title}\n" + "\n".join(f"    {line}" for line in _wrap(self.explanation))


def _wrap(text: str, width: int = 96) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


def _forward_drop(ns: Namespace) -> list[Finding]:
    f = iptables.read(ns)
    if not f.drops_forward:
        return []
    why = []
    if f.forward_policy in iptables.DROPPING:
        why.append(f"the policy of iptables' FORWARD chain is {f.forward_policy}")
    for rule in f.unconditional_drops():
        why.append(f"FORWARD ends in `{rule}`")
    docker = iptables.DOCKER_USER in f.chains or any(c.startswith("DOCKER") for c in f.chains)
    who = "Docker sets this when it starts (it enables routing for its containers and closes it for everyone else). " if docker else ""
    ours = sorted({topo for topo, _, _ in f.owned()})
    done = (
        f"vnet has added ACCEPT rules for its own bridges to {f.chain}, marked with the comment vnet:<topology>, for: {', '.join(ours)}. "
        if ours else ""
    )
    return [
        Finding(
            "forward-drop",
            "warning",
            "Forwarded traffic is dropped by iptables (" + "; ".join(why) + ")",
            who
            + "A packet is forwarded only if every firewall on the forward hook accepts it, so vnet's own "
            "accept in its nftables table is not enough: without help, endpoints of nat networks cannot reach "
            "the internet, and with br_netfilter on, even two endpoints on the same bridge cannot talk. "
            f"When vnet applies a topology here, it inserts at the top of {f.chain} "
            + ("(the chain Docker keeps for its users and never flushes) " if f.chain == iptables.DOCKER_USER else "")
            + "ACCEPT rules for exactly its own traffic: inside each of its bridges, from a nat bridge out to its "
            "uplink, and the replies back. Each rule carries the comment vnet:<topology>:<digest>; destroy removes "
            "exactly those, and nothing else in iptables is touched. vnet's own table still filters that traffic. "
            + done
            + "To see them: iptables -S " + f.chain + ".",
        )
    ]


def _br_netfilter(ns: Namespace) -> list[Finding]:
    value = ns.call(sysctl.read, "net/bridge/bridge-nf-call-iptables")
    if value != "1":
        return []
    return [
        Finding(
            "br-netfilter",
            "info",
            "br_netfilter is loaded and bridge-nf-call-iptables is 1",
            "Frames switched inside a bridge (VM to VM, container to container) also pass the IP firewall's "
            "forward hook, with the bridge as both input and output interface. vnet's own table accepts exactly "
            "that for its bridges first, so its drop rules never cut a network in two; but a foreign firewall "
            "that drops forwarded traffic (see above) then cuts it too, unless vnet's ACCEPT rules are in place. "
            "Docker loads br_netfilter.",
        )
    ]


def _nft_drops(ns: Namespace) -> list[Finding]:
    proc = ns.run(["nft", "-j", "list", "ruleset"], check=False)
    if proc.returncode != 0:
        return []
    items = json.loads(proc.stdout or '{"nftables": []}')["nftables"]
    chains, verdicts = {}, {}
    for item in items:
        if "chain" in item and item["chain"].get("hook") == "forward":
            c = item["chain"]
            chains[(c["family"], c["table"], c["name"])] = c.get("policy", "accept")
        elif "rule" in item:
            r = item["rule"]
            text = json.dumps(r.get("expr", []))
            if '"drop"' in text or '"reject"' in text:
                verdicts.setdefault((r["family"], r["table"], r["chain"]), 0)
                verdicts[(r["family"], r["table"], r["chain"])] += 1
    out = []
    for (family, table, chain), policy in sorted(chains.items()):
        if table.startswith(f"{names.MARK}-") or (family == "ip" and table == "filter"):
            continue  # vnet's own tables; iptables' filter table is explained above
        drops = verdicts.get((family, table, chain), 0)
        if policy == "drop" or drops:
            what = f"policy drop" if policy == "drop" else f"{drops} rule(s) that drop or reject"
            out.append(
                Finding(
                    "nft-drop",
                    "warning",
                    f"nftables table {family} {table} has a forward chain {chain} with {what}",
                    "This table is not vnet's and vnet does not change it. If it drops traffic of vnet's bridges "
                    "(check its rules for the bridge names vb-… or the subnets you use), add an accept for them "
                    f"in that table, e.g. `nft insert rule {family} {table} {chain} iifname \"vb-*\" accept` and the "
                    "same with oifname, or tell the tool that owns the table (firewalld: add the bridge to a "
                    "trusted zone).",
                )
            )
    return out


def _forwarding(ns: Namespace) -> list[Finding]:
    if ns.call(sysctl.read, "net/ipv4/ip_forward") == "1":
        return []
    return [
        Finding(
            "ip-forward",
            "info",
            "Host-wide IPv4 forwarding (net.ipv4.ip_forward) is off",
            "That is fine: vnet switches forwarding on only for the interfaces its nat networks need "
            "(net.ipv4.conf.<bridge|uplink>.forwarding) and restores them on destroy.",
        )
    ]


def _flowtables(ns: Namespace) -> list[Finding]:
    if ns.nft.flowtables():
        return []
    return [
        Finding(
            "flowtables",
            "info",
            "This kernel has no nftables flowtables",
            "Established flows of nat networks are not offloaded: every packet walks the forward path (conntrack, "
            "vnet's forward chain), which costs throughput and connections per second against a kernel that has "
            "them. Nothing breaks. A kernel built with CONFIG_NF_FLOW_TABLE and CONFIG_NFT_FLOW_OFFLOAD (the "
            "modules nf_flow_table_inet and nft_flow_offload on distribution kernels) lets vnet offload them; "
            "`offload: false` on a network opts out where it does.",
        )
    ]


def _journals(state_dir: Path) -> list[Finding]:
    out = []
    for journal in sorted(state_dir.glob("*/journal.jsonl")):
        topo = journal.parent.name
        out.append(
            Finding(
                "journal",
                "warning",
                f"An interrupted vnet run of topology {topo} left a journal",
                f"{journal} records the steps of a run that did not finish (killed, or a rollback failed). The next "
                f"vnet command on {topo} (plan, status, apply or destroy, as root) puts back what that run "
                "changed before doing anything else.",
            )
        )
    return out


def examine(netns: str | None, state_dir: Path) -> list[Finding]:
    from vnet import statedir

    ns = Namespace(netns)
    try:
        return (_forward_drop(ns) + _br_netfilter(ns) + _nft_drops(ns) + _forwarding(ns) + _flowtables(ns)
                + _journals(statedir.target_root(state_dir, netns)))
    finally:
        ns.close()


def report(findings: list[Finding]) -> str:
    if not any(f.level == "warning" for f in findings):
        head = "Nothing here gets in the way of vnet's networks."
    else:
        head = "Some settings of this host get in the way of vnet's networks:"
    return "\n\n".join([head, *(f.text() for f in findings)]) + "\n"


def as_json(findings: list[Finding]) -> str:
    return json.dumps([asdict(f) for f in findings], indent=2)
