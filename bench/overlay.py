"""The overlay section: one network across sandbox hosts with VXLAN (issue 15).

In its own sandbox `bov` with three hosts (bov-h1, -h2, -h3 on three subnets routed by bov-lan):

- throughput (iperf3, one stream) and connections/s endpoint to endpoint across a `control:
  static` overlay between h1 and h2 (endpoint a on h1, b on h2, one nat network), against the
  same two endpoints over the underlay without VXLAN: the same namespaces, veths, bridge and
  vnet ruleset on each host, the network applied on each host alone (no `hosts:`), a reaching b
  the only way vnet offers between hosts without an overlay: out through h1 (masqueraded), over
  the routed underlay to a port forward of h2's (DNAT to b). For reference, the two bare host
  namespaces over the underlay (no endpoint, no bridge, no vnet rules) are measured first;
- under `control: evpn` (when FRR is installed): the time from the start of `vnet apply` of a new
  endpoint on h2 until its MAC is in h1's vxlan FDB (from a type-2 route), the endpoint silent;
- apply time on h1 alone for one network spanning 3, 10 and 50 hosts (`control: static`: the
  FDB then holds hosts − 1 flood entries; the other hosts need not exist for the apply).

Everything runs in-process through vnet's API; every namespace is removed at the end.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from vnet import api, names, sandbox, spec
from vnet.drivers import ns as nsmod

from bench import dataplane

SANDBOX = "bov"
TOPOLOGY = "bno"
VNI = 4242
RUNS = 5


def host_addr(k: int) -> str:
    return sandbox.host_subnet(k)[1]


def topology(hosts: dict[str, str], control: str = "static", endpoints: dict[str, tuple[str, str]] | None = None, mode: str = "isolated") -> str:
    lines = [f"name: {TOPOLOGY}", "hosts:"] + [f"  {h}: {a}" for h, a in hosts.items()] + [
        "networks:",
        "  lan:",
        f"    mode: {mode}",
        "    subnet: 10.91.0.0/24",
        f"    overlay: {{vni: {VNI}, control: {control}}}",
        "endpoints:",
    ]
    for name, (host, address) in (endpoints or {}).items():
        lines.append(f"  {name}: {{kind: netns, network: lan, address: {address}/24, host: {host}}}")
    if control == "evpn":
        lines.append("evpn: {asn: 65020}")
    return "\n".join(lines) + "\n"


def underlay_topology(name: str, address: str, forwards: tuple[int, ...] = ()) -> str:
    """The baseline without VXLAN: the same network, endpoint namespace, veth and bridge as the
    overlay's on one host, applied there alone; the receiving host forwards `forwards` to it."""
    lines = [f"name: {TOPOLOGY}", "networks:", "  lan:", "    mode: nat", "    subnet: 10.91.0.0/24"]
    if forwards:
        lines.append("    forwards:")
        lines += [f"      - {{port: {p}, to: {name}}}" for p in forwards]
    lines += ["endpoints:", f"  {name}: {{kind: netns, network: lan, address: {address}/24}}"]
    return "\n".join(lines) + "\n"


def fdb(host: str, dev: str) -> list[str]:
    return subprocess.run(["bridge", "-n", host, "fdb", "show", "dev", dev], capture_output=True, text=True, check=True).stdout.splitlines()


class Overlay:
    def __init__(self, bench, state: Path):
        self.b = bench
        self.state = state / "overlay"
        self.applied: set[str] = set()
        self.sb = None

    def apply(self, host: str, text: str) -> float:
        self.applied.add(host)
        t0 = time.monotonic()
        api.apply(spec.load_text(text), netns=host, state_dir=self.state)
        return time.monotonic() - t0

    def destroy(self, host: str) -> None:
        api.destroy(TOPOLOGY, netns=host, state_dir=self.state)
        sandbox.settle(host)

    def run(self) -> None:
        sec = "6. overlay: one network over sandbox hosts with VXLAN (issue 15)"
        b = self.b
        rows = {
            "tp.under": b.row("ov.tp.underlay", sec, "throughput: bare host h1 → host h2 over the routed underlay (reference)", None, "Gbit/s"),
            "tp.base": b.row("ov.tp.base", sec, "throughput: endpoint on h1 → endpoint on h2 over the underlay, no VXLAN (masquerade, forward)", None, "Gbit/s"),
            "tp.vx": b.row("ov.tp.static", sec, "throughput: endpoint on h1 → endpoint on h2, static VXLAN overlay", None, "Gbit/s"),
            "cr.under": b.row("ov.cr.underlay", sec, "connections/s: bare host h1 → host h2 over the underlay (reference)", None, "conn/s"),
            "cr.base": b.row("ov.cr.base", sec, "connections/s: endpoint → endpoint over the underlay, no VXLAN", None, "conn/s"),
            "cr.vx": b.row("ov.cr.static", sec, "connections/s: endpoint → endpoint across the static overlay", None, "conn/s"),
            "evpn": b.row("ov.evpn.mac", sec, "EVPN: apply of a new endpoint on h2 → its MAC in h1's FDB", None),
        }
        for n in (3, 10, 50):
            rows[f"apply.{n}"] = b.row(f"ov.apply.{n}", sec, "apply on one host, network over N hosts (static, N−1 flood entries)", n)
        self.sb = sandbox.create(SANDBOX, state_dir=self.state, hosts=3)
        h1, h2, h3 = self.sb.host_names
        a1, a2 = host_addr(1), host_addr(2)
        servers = dataplane.Servers()
        try:
            # the underlay without VXLAN: h1 → h2 (routed by the LAN namespace), before vnet is there
            servers.iperf3(h2, 5301)
            servers.acceptor(h2, 5302)
            dataplane.wait_listening(h2, [5301, 5302])
            for _ in range(RUNS):
                rows["tp.under"].add(dataplane.throughput(h1, a2, 5301))
                rows["cr.under"].add(dataplane.connection_rate(h1, a2, 5302)[0])
            servers.stop()

            # the baseline and the overlay, one round of each in turn (the machine's load drifts
            # over a minute; alternating keeps it out of the ratio). The baseline: endpoint a on
            # h1, b on h2, the same network on each host alone, no VXLAN; a reaches b through h2's
            # port forwards. The overlay: the same endpoints, network and ports, static VXLAN.
            a, bb = f"{TOPOLOGY}-a", f"{TOPOLOGY}-b"
            text = topology({"h1": a1, "h2": a2}, endpoints={"a": ("h1", "10.91.0.10"), "b": ("h2", "10.91.0.11")}, mode="nat")
            for _ in range(RUNS):
                self.apply(h1, underlay_topology("a", "10.91.0.10"))
                self.apply(h2, underlay_topology("b", "10.91.0.11", (5301, 5302)))
                self.pair(servers, rows["tp.base"], rows["cr.base"], a, bb, a2, 1)
                for h in (h1, h2):
                    self.destroy(h)
                self.apply(h1, text)
                self.apply(h2, text)
                self.pair(servers, rows["tp.vx"], rows["cr.vx"], a, bb, "10.91.0.11", 1)
                for h in (h1, h2):
                    self.destroy(h)

            # apply time on h1 alone, for a network over N hosts (the others need not exist)
            vx = names.vxlan(TOPOLOGY, "lan")
            for n in (3, 10, 50):
                hosts = {"h1": a1} | {f"h{k}": f"198.19.{k // 250}.{k % 250 + 1}" for k in range(2, n + 1)}
                for _ in range(2):
                    rows[f"apply.{n}"].add(self.apply(h1, topology(hosts, endpoints={"a": ("h1", "10.91.0.10")})))
                    flood = [line for line in fdb(h1, vx) if line.startswith("00:00:00:00:00:00 dst ")]
                    if len(flood) != n - 1:
                        b.note(f"overlay over {n} hosts: {len(flood)} flood entries in h1's FDB, not {n - 1}")
                    self.destroy(h1)

            # EVPN: a new endpoint's MAC reaching the other host's FDB
            from vnet.kinds import frr

            missing = frr.installed()
            if missing:
                b.note(f"overlay: EVPN figure skipped, FRR is not installed ({missing} missing)")
                return
            hosts = {"h1": a1, "h2": a2}
            base = {"a": ("h1", "10.91.0.10"), "b": ("h2", "10.91.0.11")}
            text = topology(hosts, "evpn", base)
            self.apply(h1, text)
            self.apply(h2, text)
            mac_b = names.mac(TOPOLOGY, "b")
            if not wait(lambda: any(line.startswith(mac_b) and "extern_learn" in line for line in fdb(h1, vx)), 60):
                b.note("overlay: EVPN sessions did not bring b's MAC to h1 within 60 s")
                return
            for i in range(3):
                name = f"d{i}"
                more = topology(hosts, "evpn", base | {name: ("h2", f"10.91.0.{20 + i}")})
                mac = names.mac(TOPOLOGY, name)
                t0 = time.monotonic()
                self.apply(h2, more)
                if wait(lambda: any(line.startswith(mac) and "extern_learn" in line for line in fdb(h1, vx)), 30):
                    rows["evpn"].add(time.monotonic() - t0)
                else:
                    rows["evpn"].failures += 1
                    b.note(f"overlay: EVPN: the MAC of new endpoint {name} was not in h1's FDB within 30 s")
                self.apply(h2, text)
        finally:
            servers.stop()
            self.close()

    def pair(self, servers, tp, cr, client: str, server: str, addr: str, rounds: int = RUNS) -> None:
        """Rounds of throughput and connections/s from `client` to `addr` (served in `server`)."""
        servers.iperf3(server, 5301)
        servers.acceptor(server, 5302)
        dataplane.wait_listening(server, [5301, 5302])
        for _ in range(rounds):
            tp.add(dataplane.throughput(client, addr, 5301))
            cr.add(dataplane.connection_rate(client, addr, 5302)[0])
        servers.stop()

    def close(self) -> None:
        for h in sorted(self.applied):
            try:
                self.destroy(h)
            except Exception as exc:
                self.b.note(f"overlay: destroy on {h} failed: {exc}")
        for n in nsmod.listed():
            if n.startswith(f"{TOPOLOGY}-"):
                nsmod.remove(n)
        if self.sb is not None:
            sandbox.destroy(SANDBOX, state_dir=self.state)


def wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())
