"""The two baselines, derived from the very resources vnet wants, so all three build the same thing.

(a) the seeds' way: a shell script with one command per object — `ip netns add`, `ip link add`,
    `ip link set`, `ip addr add`, `ip route add`, `sysctl -w`, one `nft add …` per table, set,
    chain and rule and one `nft add element` per object (a network, a subnet or a port: all of its
    elements in one invocation), `dnsmasq` per network — run inside the host namespace.
(b) the floor: one `ip -batch` file in the host namespace (namespaces, bridges, taps, veths with
    their peers born inside the endpoint namespaces, bridge addresses), and — because an address or
    a route can only be added from inside its namespace — one `ip -n NS -batch` per endpoint
    namespace; one `nft -f` file; one `sysctl -p` file; `dnsmasq` per network, as vnet starts it.
(c) the stricter floor: (b)'s host `ip -batch` and `nft -f` only; nothing inside the namespaces.
(d) the work floor: everything (b) does, the cheapest way this machine offers: the host `ip -batch`;
    the in-namespace half (and the bridge ports' IPv6 off, as vnet does) from one process that
    enters each namespace in turn (bench/nsconf.py), not a process per namespace; `nft -f`;
    `sysctl -p`; every dnsmasq spawned before any is waited for.

What vnet does beyond this (ownership marks are in both baselines too; vnet's journal, sysctl
record, claims, locks, observation and plan are not) is vnet's overhead. One difference remains:
iproute2 6.1 cannot put vnet's protocol mark (IFA_PROTO 86) on addresses, so the baselines add them
unmarked — the same kernel work minus one attribute.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from vnet import dnsconf, snoop
from vnet.drivers import process
from vnet.kinds import rank
from vnet.kinds.address import ADDRESS_KINDS
from vnet.resources import Resource

from bench.env import ROOT, in_ns, run


@dataclass
class Work:
    host_batch: list[str] = field(default_factory=list)
    ns_batches: dict[str, list[str]] = field(default_factory=dict)
    nft_text: str = ""
    nft_tables: list[tuple[str, str]] = field(default_factory=list)  # (family, name)
    sysctls: list[tuple[str, str]] = field(default_factory=list)  # (path under /proc/sys, value)
    services: list[Resource] = field(default_factory=list)
    scripts: list[Resource] = field(default_factory=list)  # dnsmasq's lease scripts (vnet.snoop), written before it starts
    seeds: list[str] = field(default_factory=list)  # shell commands of (a)
    links: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) in creation order
    namespaces: list[str] = field(default_factory=list)
    ns_ops: dict[str, list[list]] = field(default_factory=dict)  # (d): what each namespace's batch does, for bench/nsconf.py
    ports: list[str] = field(default_factory=list)  # (d): bridge ports whose IPv6 goes off before their peers come up

    def counts(self) -> dict[str, int]:
        return {
            "ip_batch_lines": len(self.host_batch) + sum(len(v) for v in self.ns_batches.values()),
            "ip_processes_floor": 1 + len(self.ns_batches),
            "seed_commands": len(self.seeds),
        }


def _q(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


def derive(want: list[Resource], state: Path) -> Work:
    """The kernel work of vnet's desired resources, as ip/nft/sysctl/dnsmasq input."""
    w = Work()

    def ns_lines(ns: str) -> list[str]:
        return w.ns_batches.setdefault(ns, [])

    def ip(ns: str, line: str) -> None:
        """One ip command: a line of the right batch, and a command of the seeds' script."""
        (ns_lines(ns) if ns else w.host_batch).append(line)
        w.seeds.append(("ip " if not ns else f"ip -n {shlex.quote(ns)} ") + line)

    for r in sorted(want, key=lambda r: rank(r.kind)):
        a = r.get
        if r.kind == "netns":
            w.namespaces.append(r.key)
            w.host_batch.append(f"netns add {r.key}")
            w.seeds.append(f"ip netns add {shlex.quote(r.key)}")
            ip(r.key, _q("link", "set", "lo", "alias", a("mark"), "up"))
            w.ns_ops.setdefault(r.key, []).append(["link", "lo", a("mark")])
        elif r.kind == "bridge":
            w.links.append(("bridge", r.key))
            opts = (["address", a("mac")] if a("mac") else []) + (["mtu", str(a("mtu"))] if a("mtu") else [])
            ip("", _q("link", "add", r.key, *opts, "type", "bridge"))
            ip("", _q("link", "set", r.key, "alias", a("mark"), "up"))
        elif r.kind == "tap":
            w.links.append(("tap", r.key))
            opts = (["user", str(a("owner"))] if a("owner") is not None else []) + (["group", str(a("group"))] if a("group") is not None else [])
            opts += ["multi_queue"] if a("multi_queue") else []
            ip("", _q("tuntap", "add", "dev", r.key, "mode", a("mode"), *opts))
            more = (["address", a("mac")] if a("mac") else []) + (["mtu", str(a("mtu"))] if a("mtu") else [])
            more += ["master", a("master")] if a("master") else []
            ip("", _q("link", "set", r.key, *more, "alias", a("mark"), "up"))
            w.ports += [r.key] if a("master") else []
        elif r.kind == "veth":
            w.links.append(("veth", r.key))
            mtu = ["mtu", str(a("mtu"))] if a("mtu") else []
            peer = ["peer", "name", a("peer_name"), "address", a("peer_mac"), *mtu, "netns", a("peer_ns")]
            ip("", _q("link", "add", r.key, "address", a("mac"), *mtu, "type", "veth", *peer))
            ip("", _q("link", "set", r.key, *(["master", a("master")] if a("master") else []), "alias", a("mark"), "up"))
            ip(a("peer_ns"), _q("link", "set", a("peer_name"), "alias", a("peer_mark"), "up"))
            w.ns_ops.setdefault(a("peer_ns"), []).append(["link", a("peer_name"), a("peer_mark")])
            w.ports += [r.key] if a("master") else []
        elif r.kind in ADDRESS_KINDS:
            ip(a("ns"), _q("addr", "add", f"{a('address')}/{a('prefixlen')}", "dev", a("ifname")))
            if a("ns"):
                w.ns_ops.setdefault(a("ns"), []).append(["addr", a("ifname"), a("address"), a("prefixlen")])
        elif r.kind == "route":
            dst = "default" if a("dst") == "default" else a("dst")
            via = ["via", a("gateway")] if a("gateway") else []
            ip(a("ns"), _q("route", "add", dst, *via, "dev", a("ifname"), "proto", "86"))
            if a("ns"):
                w.ns_ops.setdefault(a("ns"), []).append(["route", a("dst"), a("gateway"), a("ifname")])
        elif r.kind == "ruleset":
            w.nft_text = a("text")
            w.nft_tables = [(fam, r.key) for fam in ("inet", "bridge") if f"table {fam} {r.key} " in w.nft_text]
            w.seeds += nft_commands(w.nft_text)
        elif r.kind == "sysctl":
            if a("ns"):
                raise ValueError("the benchmark's topologies set sysctls in the host namespace only")
            w.sysctls.append((a("path"), a("value")))
            w.seeds.append(_q("sysctl", "-q", "-w", f"{a('path')}={a('value')}"))
        elif r.kind == "service":
            w.services.append(r)
            w.seeds.append(_q("dnsmasq", f"--conf-file={dnsconf.files(state, a('network'))['conf']}"))
        elif r.kind == "dhcp_script":
            w.scripts.append(r)
        elif r.kind in ("qdisc", "uplink", "vm"):
            raise ValueError(f"the benchmark's topologies have no {r.kind}")
        else:
            raise ValueError(f"unknown resource kind {r.kind}")
    return w


def nft_commands(text: str) -> list[str]:
    """vnet's ruleset as the seeds would type it: one `nft` command per table, set, chain, rule and
    object (a bridge, a subnet, a port: the elements keyed by it, in one invocation)."""
    cmds: list[str] = []
    elements: dict[str, list[str]] = {}
    rules: list[str] = []
    family = table = None
    block: list[str] | None = None
    head = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("table "):
            _, family, table, _ = line.split()
            cmds.append(f"nft add table {family} {table}")
        elif line.startswith("comment ") and block is None:
            # a table's comment can only be given when the table is made
            cmds[-1] = f"nft {shlex.quote(f'add table {family} {table} {{ {line} ; }}')}"
        elif line.startswith("limit ") and line.endswith("}"):
            cmds.append(f"nft {shlex.quote(f'add {line}'.replace('add limit ', f'add limit {family} {table} ', 1))}")
        elif line.startswith(("set ", "map ", "chain ")) and line.endswith("{"):
            head, block = line[:-1].strip(), []
        elif line == "}" and block is not None:
            kind, name = head.split()
            if kind == "chain":
                if block and block[0].startswith("type "):  # a base chain: its hook is given when it is made
                    cmds.append(f"nft {shlex.quote(f'add chain {family} {table} {name} {{ {block[0]} }}')}")
                    block = block[1:]
                else:  # a regular chain, reached by jump/goto
                    cmds.append(f"nft {shlex.quote(f'add chain {family} {table} {name}')}")
                rules += [f"nft {shlex.quote(f'add rule {family} {table} {name} {r}')}" for r in block]
            else:
                props = [b for b in block if not b.startswith("elements = ")]
                cmds.append(f"nft {shlex.quote(f'add {kind} {family} {table} {name} {{ ' + ' ; '.join(props) + ' ; }')}")
                for b in block:
                    if b.startswith("elements = "):
                        for e in b[len("elements = { "):-2].split(", "):
                            elements.setdefault(e.split(" ")[0], []).append(f"add element {family} {table} {name} {{ {e} }}")
            block = None
        elif line == "}":
            family = table = None
        elif block is not None:
            block.append(line)
    cmds += [f"nft {shlex.quote('; '.join(adds))}" for adds in elements.values()]
    return cmds + rules


# --- running them -----------------------------------------------------------------------------------


def _prepare_services(w: Work, host: str, state: Path) -> None:
    for r in w.scripts:  # as vnet writes them: root's, 0700
        path = snoop.script_path(state, r.get("network"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(snoop.script_text(host, r.get("table"), r.get("python")))
        path.chmod(0o700)
    for r in w.services:
        f = dnsconf.files(state, r.get("network"))
        f["conf"].parent.mkdir(parents=True, exist_ok=True)
        f["conf"].write_text(r.get("config"))
        for path in (f["leases"], f["log"]):
            path.parent.mkdir(parents=True, exist_ok=True)  # leases live under the lib directory, not beside the config
            path.touch()
            os.chown(path, 65534, 65534)
        # the identity record vnet keeps of a daemon it starts (what `running` checks), as vnet writes it
        process._write_ident(process.ident_file(f["pid"], f["conf"]), {"exe": process._program("dnsmasq")})


def _wait_services(w: Work, state: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for r in w.services:
        f = dnsconf.files(state, r.get("network"))
        while (pid := process.running(f["pid"], marker=f["conf"])) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq for {r.get('network')} did not start: {f['log'].read_text()[-400:]}")
            time.sleep(0.005)
        ident = process.ident_file(f["pid"], f["conf"])
        process._write_ident(ident, {"exe": process._program("dnsmasq"), "pid": pid, "start": process.start_time(pid), "boot": process._boot_id()})


def _rules_and_sysctls(w: Work, host: str, scratch: Path) -> None:
    if w.nft_text:
        rules = scratch / "floor.nft"
        rules.write_text(w.nft_text)
        run(in_ns(host, ["nft", "-f", str(rules)]))
    if w.sysctls:
        conf = scratch / "floor.sysctl"
        conf.write_text("".join(f"{p} = {v}\n" for p, v in w.sysctls))
        run(in_ns(host, ["sysctl", "-q", "-p", str(conf)]))


def build_floor(w: Work, host: str, state: Path, scratch: Path) -> float:
    """(b): returns the wall time of the whole build."""
    t0 = time.perf_counter()
    _prepare_services(w, host, state)
    batch = scratch / "floor.batch"
    batch.write_text("\n".join(w.host_batch) + "\n")
    run(in_ns(host, ["ip", "-batch", str(batch)]))
    for ns, lines in w.ns_batches.items():
        run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")
    _rules_and_sysctls(w, host, scratch)
    for r in w.services:
        run(in_ns(host, ["dnsmasq", f"--conf-file={dnsconf.files(state, r.get('network'))['conf']}"]))
    _wait_services(w, state)
    return time.perf_counter() - t0


def build_work_floor(w: Work, host: str, state: Path, scratch: Path) -> float:
    """(d) the work floor: what (b) builds, without a process per namespace, daemons started
    together. Returns the wall time of the whole build."""
    t0 = time.perf_counter()
    _prepare_services(w, host, state)
    batch = scratch / "work.batch"
    batch.write_text("\n".join(w.host_batch) + "\n")
    run(in_ns(host, ["ip", "-batch", str(batch)]))
    spec = scratch / "work.json"
    spec.write_text(json.dumps({"host": host, "ports": w.ports, "namespaces": w.ns_ops}))
    inside = subprocess.run([sys.executable, "-m", "bench.nsconf", str(spec)], cwd=ROOT, capture_output=True, text=True)
    if inside.returncode != 0:
        raise RuntimeError(f"bench.nsconf failed: {inside.stderr.strip()[-800:]}")
    _rules_and_sysctls(w, host, scratch)
    daemons = [subprocess.Popen(in_ns(host, ["dnsmasq", f"--conf-file={dnsconf.files(state, r.get('network'))['conf']}"]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
               for r in w.services]
    for d in daemons:
        out = d.communicate()[0]
        if d.returncode != 0:
            raise RuntimeError(f"dnsmasq failed: {out.decode(errors='replace').strip()[:400]}")
    _wait_services(w, state)
    return time.perf_counter() - t0


def build_strict(w: Work, host: str, scratch: Path) -> float:
    """(c) the stricter floor: one `ip -batch` of the host side (every namespace, bridge, tap and
    veth — each peer born in its namespace with its MAC — and the bridges' addresses) and one
    `nft -f`; nothing configured inside the namespaces, no sysctl, no dnsmasq."""
    t0 = time.perf_counter()
    batch = scratch / "strict.batch"
    batch.write_text("\n".join(w.host_batch) + "\n")
    run(in_ns(host, ["ip", "-batch", str(batch)]), timeout=1200)
    if w.nft_text:
        rules = scratch / "strict.nft"
        rules.write_text(w.nft_text)
        run(in_ns(host, ["nft", "-f", str(rules)]))
    return time.perf_counter() - t0


CLEANUP_GROUP = 4242  # a link group no link of the sandbox's host namespace uses


def delete_fast(w: Work, host: str, state: Path, scratch: Path, sysctl_before: dict[str, str] | None = None) -> float:
    """Remove whatever part of a build exists, fast (the benchmark's cleanup where the deletion is
    not itself a sample: the floor's link-by-link deletion takes 19.5 s at N = 1000 and minutes at
    10,000): stop the daemons, drop the tables, restore the sysctls, put every link in one link
    group and delete the group (one batch in the kernel), then the namespaces."""
    t0 = time.perf_counter()
    delete_floor(Work(services=w.services, nft_tables=w.nft_tables, sysctls=w.sysctls), host, state, scratch, sysctl_before or {})
    batch = scratch / "group.batch"
    batch.write_text("".join(f"link set dev {name} group {CLEANUP_GROUP}\n" for _, name in w.links))
    run(in_ns(host, ["ip", "-force", "-batch", str(batch)]), check=False, timeout=1200)
    run(in_ns(host, ["ip", "link", "delete", "group", str(CLEANUP_GROUP)]), check=False, timeout=1200)
    batch.write_text("".join(f"netns del {ns}\n" for ns in w.namespaces))
    run(["ip", "-force", "-batch", str(batch)], check=False, timeout=1200)
    return time.perf_counter() - t0


def build_seeds(w: Work, host: str, state: Path, scratch: Path, timeout: float) -> float:
    """(a): returns the wall time of the whole build."""
    script = scratch / "seeds.sh"
    script.write_text("set -e\n" + "\n".join(w.seeds) + "\n")
    t0 = time.perf_counter()
    _prepare_services(w, host, state)
    run(in_ns(host, ["bash", str(script)]), timeout=timeout)
    _wait_services(w, state)
    return time.perf_counter() - t0


def delete_floor(w: Work, host: str, state: Path, scratch: Path, sysctl_before: dict[str, str]) -> float:
    """(b)'s deletion: stop the daemons, one nft transaction, restore the uplink's sysctl, one
    `ip -batch` deleting every link (a veth takes its peer along) and namespace, and the state files.
    Works on whatever part of the build exists (also cleans up after vnet or a failed run)."""
    t0 = time.perf_counter()
    pids = []
    for r in w.services:
        f = dnsconf.files(state, r.get("network"))
        pid = process.running(f["pid"], marker=f["conf"])
        if pid is not None:
            os.kill(pid, 15)
            pids.append((pid, f))
    deadline = time.monotonic() + 5
    for pid, f in pids:
        while process.running(f["pid"], marker=f["conf"]) == pid and time.monotonic() < deadline:
            time.sleep(0.005)
    if w.nft_tables:
        run(in_ns(host, ["nft", "-f", "-"]), input="".join(f"table {fam} {name}\ndelete table {fam} {name}\n" for fam, name in w.nft_tables))
    restore = [(p, sysctl_before[p]) for p, _ in w.sysctls if p in sysctl_before]
    if restore:
        conf = scratch / "restore.sysctl"
        conf.write_text("".join(f"{p} = {v}\n" for p, v in restore))
        run(in_ns(host, ["sysctl", "-q", "-p", str(conf)]), check=False)
    lines = [f"link del {name}" for kind, name in w.links if kind != "bridge"]
    lines += [f"link del {name}" for kind, name in w.links if kind == "bridge"]
    lines += [f"netns del {ns}" for ns in w.namespaces]
    batch = scratch / "delete.batch"
    batch.write_text("\n".join(lines) + "\n")
    run(in_ns(host, ["ip", "-force", "-batch", str(batch)]), check=False)  # -force: go on past what is missing
    if state.exists():
        import shutil

        shutil.rmtree(state, ignore_errors=True)
    return time.perf_counter() - t0


def read_sysctls(host: str, w: Work) -> dict[str, str]:
    """Values before the build of the host-side sysctls the build sets and that outlive it."""
    out = {}
    for path, _ in w.sysctls:
        proc = run(in_ns(host, ["cat", f"/proc/sys/{path}"]), check=False)
        if proc.returncode == 0:
            out[path] = proc.stdout.strip()
    return out


# --- iptables: the per-rule way of port forwarding ----------------------------------------------------


def iptables_rules(first_port: int, count: int, dest: str, match_addr: str) -> str:
    lines = ["*nat"]
    for port in range(first_port, first_port + count):
        lines.append(f"-A PREROUTING -d {match_addr}/32 -p tcp -m tcp --dport {port} -j DNAT --to-destination {dest}:{port}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
