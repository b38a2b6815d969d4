"""The demo: a sandbox of namespaces, examples/nat.yaml applied in it, status, real traffic; then
examples/guests.yaml with two real QEMU guests (where QEMU is installed); teardown.

Nothing outside the sandbox's namespaces is touched; everything is removed at the end, even when a
step fails.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vnet import api, check, guest, ops, qemuargs, sandbox, spec
from vnet.drivers import ns as nsmod

ROOT = Path(__file__).resolve().parents[1]
console = Console()


def proof(rows: list[tuple[str, str, bool]]) -> Table:
    table = Table(title="traffic proved against the declared intent")
    for col in ("probe", "expected", "result"):
        table.add_column(col)
    for probe, expected, ok in rows:
        table.add_row(probe, expected, "[green]as declared[/]" if ok else "[red]WRONG[/]")
    return table


def guests(sb: sandbox.Sandbox, state: Path) -> bool:
    """examples/guests.yaml: two real QEMU guests lease, resolve each other and reach the internet."""
    topo = spec.load(ROOT / "examples" / "guests.yaml")
    console.rule("examples/guests.yaml: two QEMU guests with DHCP and DNS from vnet")
    t0 = time.monotonic()
    api.apply(topo, netns=sb.host, state_dir=state)
    try:
        agents = {vm: guest.Agent(qemuargs.files(api.state_of(topo.name, sb.host, state), vm)["agent"]) for vm in topo.vms}
        for a in agents.values():
            a.wait_ready(timeout=180)
        console.print(f"both guests booted and configured by DHCP in {time.monotonic() - t0:.1f}s")
        console.print("QEMU command line of web: " + " ".join(api.qemu_args(topo, "web", netns=sb.host, state_dir=state, full=True)), highlight=False, soft_wrap=True)
        table = Table(title="DHCP leases from vnet's dnsmasq")
        for col in ("mac", "address", "name"):
            table.add_column(col)
        for lease in api.leases(topo.name, state_dir=state, netns=sb.host):
            table.add_row(lease.mac, lease.address, lease.name)
        console.print(table)

        def ok(vm: str, script: str, expect: str = "") -> bool:
            rc, out = agents[vm].run(script)
            return rc == 0 and expect in out

        wan = sandbox.WAN_ADDR
        rows = [
            ("web → db by name: ping db.lab.test", "reachable", ok("web", "ping -c1 -W3 db.lab.test", "192.168.223.20")),
            ("db → web by short name: ping web", "reachable", ok("db", "ping -c1 -W3 web")),
            (f"web resolves {sandbox.DNS_NAME} (upstream only)", wan, ok("web", f"nslookup -type=a {sandbox.DNS_NAME}", wan)),
            (f"db → internet TCP {wan}:{sandbox.WAN_PORT}", f"masqueraded to {sandbox.HOST_ADDR}",
             ok("db", f"echo | nc -w 3 {wan} {sandbox.WAN_PORT}", sandbox.HOST_ADDR)),
        ]
        console.print(proof(rows))
        return all(r[2] for r in rows)
    finally:
        removed = api.destroy(topo.name, netns=sb.host, state_dir=state)
        console.print(f"vnet destroy: {len(removed)} objects removed (guests stopped first)")


def main() -> int:
    topo = spec.load(ROOT / "examples" / "nat.yaml")
    name = "demo" + secrets.token_hex(2)
    state = Path(tempfile.mkdtemp(prefix="vnet-demo-"))
    console.rule(f"sandbox {name}: {name}-host plays the host, {name}-lan the home router, {name}-wan the internet")
    sb = sandbox.create(name, state_dir=state)
    ok = False
    try:
        t0 = time.monotonic()
        actions = api.apply(topo, netns=sb.host, state_dir=state)
        console.print(f"vnet apply examples/nat.yaml: {len(actions)} changes in {time.monotonic() - t0:.2f}s")
        report = api.status(topo, netns=sb.host, state_dir=state)
        table = Table(title=f"vnet status (in sync: {report['in_sync']})")
        for col in ("kind", "name", "state"):
            table.add_column(col)
        for row in report["resources"]:
            table.add_row(row["kind"], row["name"], row["state"])
        console.print(table)

        # `vnet check`: every pair, ICMP/TCP/UDP and a full-MTU probe, against the file's intent
        console.rule("vnet check examples/nat.yaml: real traffic against the declared intent")
        checked = ops.check(topo, netns=sb.host, state_dir=state)
        check.render(checked, console)
        wan, port = sandbox.WAN_ADDR, sandbox.WAN_PORT
        seen = check.tcp_line("lab-c1", wan, port)
        rows = [(f"c1 → internet TCP {wan}:{port}, source seen", f"masqueraded to {sandbox.HOST_ADDR} (seen: {seen})", seen == sandbox.HOST_ADDR)]
        console.print(proof(rows))
        again = api.apply(topo, netns=sb.host, state_dir=state)
        console.print(f"second apply: {len(again)} changes (expected 0)")
        ok = checked.ok and all(r[2] for r in rows) and not again and report["in_sync"]
        removed = api.destroy(topo.name, netns=sb.host, state_dir=state)
        console.print(f"vnet destroy: {len(removed)} objects removed")
        if shutil.which("qemu-system-x86_64") and list(Path("/boot").glob("vmlinuz-*")):
            ok = guests(sb, state) and ok
        else:
            console.print("QEMU or a guest kernel is missing: skipping the guests part (make setup installs them)")
    finally:
        try:
            for t in ("lab",):
                api.destroy(t, netns=sb.host, state_dir=state)
        finally:
            for n in nsmod.listed():
                if n.startswith(f"{topo.name}-"):
                    nsmod.remove(n)
            sandbox.destroy(name, state_dir=state)
            shutil.rmtree(state, ignore_errors=True)
            console.print(f"sandbox {name} removed")
    console.print("[green]demo passed[/]" if ok else "[red]demo failed[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
