"""ACCEPT rules in iptables' filter table, added only where another firewall would drop vnet's traffic.

Docker (and ufw, and others) set the iptables FORWARD policy to DROP. With iptables-nft that
policy lives in its own nftables base chain (`table ip filter`, hook forward), and a packet must be
accepted by every base chain on the hook: vnet's own table accepting it is not enough. So, only when
the FORWARD chain drops by default, vnet inserts a few ACCEPT rules for its own bridges at the top
of `DOCKER-USER` (the chain Docker keeps for its users; it is evaluated first and Docker never
flushes it) or, without Docker, of `FORWARD`:

    -i <bridge> -o <bridge>                            frames switched inside the bridge
                                                       (they cross FORWARD with br_netfilter)
    -i <bridge> -o <uplink>                            nat: out to the uplink
    -i <uplink> -o <bridge> --ctstate RELATED,ESTABLISHED   nat: the replies
    -i <uplink> -o <bridge> --ctstate DNAT             nat with port forwards: connections vnet DNATs
    -i <bridge A> -o <bridge B> (and replies back)     `allow:` between two networks

vnet's own nftables table still filters all of this traffic; these rules only stop the foreign
policy from dropping it first.

Every rule carries the comment `vnet:<topology>:<digest>`: that comment is the ownership mark
(observe finds the rules by it, delete removes exactly those) and the digest tells whether the
rules are still the ones the topology wants. All rules of a change go in one `iptables-restore
--noflush` transaction. Nothing else in the table is read for more than its policies and chains.
"""

from __future__ import annotations

import os
import shlex

from vnet import names
from vnet.drivers.ns import Namespace
from vnet.errors import VnetError
from vnet.resources import Resource
from vnet.values import Record

KIND = "iptables"
DOCKER_USER = "DOCKER-USER"
DROPPING = ("DROP", "REJECT")


def available() -> bool:
    return _on_path("iptables-save") is not None and _on_path("iptables-restore") is not None


def _on_path(name: str) -> str | None:
    """Where shutil.which finds the program, without importing shutil (it brings bz2 and lzma: ~2
    ms of `vnet status`, which asks this): an executable file in a directory of $PATH."""
    path = os.environ["PATH"] if "PATH" in os.environ else (os.confstr("CS_PATH") or os.defpath)
    candidates = (os.path.join(d, name) for d in path.split(os.pathsep)) if path else ()
    return next((c for c in candidates if os.access(c, os.X_OK) and not os.path.isdir(c)), None)


def _nft_backend(save: str) -> bool:
    """Whether `save` is iptables-nft's (xtables-nft-multi, maybe through update-alternatives'
    links): its tables are nftables tables of family ip, which vnet reads over netlink anyway."""
    return "nft" in os.path.basename(os.path.realpath(save))


class Filter(Record):
    """What vnet needs to know of iptables' filter table in one namespace."""

    __slots__ = ("policies", "chains", "rules")
    policies: dict[str, str]  # built-in chain → policy
    chains: set[str]
    rules: list[list[str]]  # each rule as iptables-save prints it, split

    def __init__(self, policies: dict[str, str] | None = None, chains: set[str] | None = None,
                 rules: list[list[str]] | None = None) -> None:
        self.policies = {} if policies is None else policies
        self.chains = set() if chains is None else chains
        self.rules = [] if rules is None else rules

    @property
    def forward_policy(self) -> str:
        return self.policies.get("FORWARD", "ACCEPT")

    def unconditional_drops(self) -> list[str]:
        """`-A FORWARD -j DROP|REJECT` with no match: everything after it is dropped too."""
        return [shlex.join(r) for r in self.rules if len(r) == 4 and r[:2] == ["-A", "FORWARD"] and r[2] == "-j" and r[3] in DROPPING]

    @property
    def drops_forward(self) -> bool:
        return self.forward_policy in DROPPING or bool(self.unconditional_drops())

    @property
    def chain(self) -> str:
        """Where vnet's rules go: DOCKER-USER when Docker made it, else FORWARD itself."""
        return DOCKER_USER if DOCKER_USER in self.chains else "FORWARD"

    def owned(self, topology: str | None = None) -> list[tuple[str, str, list[str]]]:
        """(topology, digest, rule) of every rule carrying a vnet comment (of `topology` if given)."""
        out = []
        for r in self.rules:
            mark = names.parse_digest_mark(comment_of(r))
            if mark is not None and (topology is None or mark[0] == topology):
                out.append((mark[0], mark[1], r))
        return out


def comment_of(rule: list[str]) -> str | None:
    for i, word in enumerate(rule[:-1]):
        if word == "--comment":
            return rule[i + 1]
    return None


def parse(text: str) -> Filter:
    f = Filter()
    for line in text.splitlines():
        if line.startswith(":"):
            name, policy = line[1:].split()[:2]
            f.chains.add(name)
            if policy != "-":
                f.policies[name] = policy
        elif line.startswith("-A "):
            try:
                f.rules.append(shlex.split(line))
            except ValueError:
                continue  # a rule vnet cannot parse is not vnet's
    return f


# what iptables-nft-save prints of a filter table that does not exist (nothing is created)
_BUILT_IN = {"INPUT": "ACCEPT", "FORWARD": "ACCEPT", "OUTPUT": "ACCEPT"}


def read(ns: Namespace, nft_tables: list[dict] | None = None) -> Filter:
    """The filter table as the `iptables` tools see it (reading creates nothing). `nft_tables`,
    when given, are the namespace's nftables tables as just read (drivers.nft.dump): with the nft
    backend and no `ip filter` table among them, iptables-save would print the built-in chains,
    empty and accepting, so it is not run (~4 ms of `vnet status`)."""
    save = _on_path("iptables-save")
    if save is None or _on_path("iptables-restore") is None:
        return Filter()
    if nft_tables is not None and _nft_backend(save) and not any(t["family"] == "ip" and t["name"] == "filter" for t in nft_tables):
        return Filter(dict(_BUILT_IN), set(_BUILT_IN))
    proc = ns.run(["iptables-save", "-t", "filter"], check=False)
    if proc.returncode != 0:
        return Filter()
    return parse(proc.stdout)


# --- desired and observed ------------------------------------------------------------------------


def render(topology: str, chain: str, paths: list[tuple[str, str, str | None]]) -> tuple[list[str], str]:
    """Rules (iptables-save lines) for (in, out, conntrack states or None) paths, and their digest."""
    plain = []
    for src, dst, states in dict.fromkeys(paths):  # in order, without repeats
        rule = ["-i", src, "-o", dst]
        if states:
            rule += ["-m", "conntrack", "--ctstate", states]
        plain.append(rule)
    digest = names.sha256(repr((chain, plain)).encode()).hexdigest()[:12]
    mark = names.digest_mark(topology, digest)
    return [shlex.join(["-A", chain, *r, "-m", "comment", "--comment", mark, "-j", "ACCEPT"]) for r in plain], digest


def resource(chain: str, lines: list[str], digest: str | None) -> Resource:
    # built directly: the kind is the engine's addition to resources.ORDER (see plan.rank)
    return Resource(KIND, chain, (("chain", chain), ("digest", digest), ("rules", len(lines))), (("lines", tuple(lines)),))


def desired(topology: str, current: Filter, paths: list[tuple[str, str, str | None]]) -> list[Resource]:
    """Nothing unless the FORWARD chain drops by default; then one resource of ACCEPT rules."""
    if not paths or not current.drops_forward:
        return []
    lines, digest = render(topology, current.chain, paths)
    return [resource(current.chain, lines, digest)]


def observe(topology: str, current: Filter) -> list[Resource]:
    by_chain: dict[str, list[tuple[str, list[str]]]] = {}
    for _, digest, rule in current.owned(topology):
        by_chain.setdefault(rule[1], []).append((digest, rule))
    out = []
    for chain, rules in sorted(by_chain.items()):
        digests = {d for d, _ in rules}
        out.append(resource(chain, [shlex.join(r) for _, r in rules], digests.pop() if len(digests) == 1 else None))
    return out


# --- changes ------------------------------------------------------------------------------------


def _restore(ns: Namespace, lines: list[str]) -> None:
    if not lines:
        return
    script = "*filter\n" + "\n".join(lines) + "\nCOMMIT\n"
    proc = ns.run(["iptables-restore", "-w", "10", "--noflush"], input=script, check=False)
    if proc.returncode != 0:
        raise VnetError(f"iptables-restore rejected vnet's rules in {ns.label}: {(proc.stderr or proc.stdout).strip()}")


def _topology_of(r: Resource) -> str | None:
    for line in r.get("lines") or ():
        mark = names.parse_digest_mark(comment_of(shlex.split(line)))
        if mark is not None:
            return mark[0]
    return None


def _removals(ns: Namespace, r: Resource) -> list[str]:
    """`-D` lines for the rules of r's topology now in r's chain (whatever their digest)."""
    topology = _topology_of(r)
    if topology is None:
        return []
    return [shlex.join(["-D", *rule[1:]]) for _, _, rule in read(ns).owned(topology) if rule[1] == r.key]


def _inserts(r: Resource) -> list[str]:
    out = []
    for i, line in enumerate(r.get("lines") or (), 1):
        words = shlex.split(line)
        out.append(shlex.join(["-I", words[1], str(i), *words[2:]]))
    return out


def create(ns: Namespace, r: Resource) -> None:
    # rules of this topology already in the chain (a run cut short) are replaced, not doubled
    _restore(ns, _removals(ns, r) + _inserts(r))


def delete(ns: Namespace, r: Resource) -> None:
    _restore(ns, _removals(ns, r))


def update(ns: Namespace, old: Resource, new: Resource) -> None:
    # one transaction: nobody sees the chain without vnet's rules in between
    removals = _removals(ns, old) + ([] if old.key == new.key else _removals(ns, new))
    _restore(ns, removals + _inserts(new))
