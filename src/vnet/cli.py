"""The `vnet` command line."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from vnet import api, spec
from vnet.engine import DEFAULT_STATE_DIR
from vnet.errors import SpecError, VnetError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Declarative virtual networks for VMs and containers.")
sandbox_app = typer.Typer(no_args_is_help=True, help="Throwaway namespaces that play host, LAN and internet.")
app.add_typer(sandbox_app, name="sandbox")


class _Console:
    """rich, imported when something is printed through it (tables, errors): `vnet apply` prints
    plain lines and should not pay rich's import, nor its rendering for each of a thousand steps."""

    def __init__(self, stderr: bool = False):
        self._stderr = stderr
        self._console = None

    def print(self, *args, **kwargs) -> None:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        self._console.print(*args, **kwargs)


out = _Console()
err = _Console(stderr=True)


def _say(line: str) -> None:
    print(line)


class Ctx:
    netns: Optional[str] = None
    state_dir: Path = DEFAULT_STATE_DIR


ctx = Ctx()


@app.callback()
def _global(
    netns: Optional[str] = typer.Option(None, "--netns", help="act inside this network namespace (it plays the host)"),
    state_dir: Path = typer.Option(DEFAULT_STATE_DIR, "--state-dir", help="where vnet keeps journals and records"),
) -> None:
    ctx.netns, ctx.state_dir = netns, state_dir


def _fail(exc: VnetError) -> None:
    if isinstance(exc, SpecError):
        for p in exc.problems:
            err.print(f"[red]error[/]: {p}", highlight=False, markup=True, soft_wrap=True)
    else:
        err.print(f"[red]error[/]: {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def _engine(topo: str):
    return api.engine(topo, netns=ctx.netns, state_dir=ctx.state_dir)


@app.command()
def validate(topology: Path) -> None:
    """Check a topology file and print every problem."""
    try:
        topo = spec.load(topology)
    except VnetError as exc:
        _fail(exc)
    _say(f"{topology}: valid ({len(topo.networks)} networks, {len(topo.endpoints)} endpoints)")


@app.command()
def plan(topology: Path) -> None:
    """Print the changes apply would make (nothing when the host matches)."""
    try:
        planned = api.plan(spec.load(topology), netns=ctx.netns, state_dir=ctx.state_dir, source=topology)
    except VnetError as exc:
        _fail(exc)
    if not planned.actions:
        _say("no changes: the host matches the topology")
    for a in planned.actions:
        _say(a.describe())


@app.command()
def apply(topology: Path, force: bool = typer.Option(False, "--force", help="take over a topology of the same name applied from another file")) -> None:
    """Make the host match the topology; on any failure, undo everything this run changed."""
    try:
        topo = spec.load(topology)
        eng = _engine(topo.name)
        eng.log = _say
        t0 = time.monotonic()
        actions = eng.apply(topo, str(topology.resolve()), force)
    except VnetError as exc:
        _fail(exc)
    dt = time.monotonic() - t0
    _say(f"applied {topo.name}: {len(actions)} changes in {dt:.2f}s" if actions else "no changes: the host matches the topology")


@app.command()
def destroy(topology: Path, force: bool = typer.Option(False, "--force", help="stop processes still running in the namespaces vnet made")) -> None:
    """Remove exactly what vnet made for this topology."""
    try:
        name = api.topology_name(topology)
        eng = _engine(name)
        eng.log = _say
        actions = eng.destroy(force)
    except VnetError as exc:
        _fail(exc)
    _say(f"destroyed {name}: {len(actions)} objects removed")


@app.command()
def status(topology: Path, output: str = typer.Option("table", "-o", "--output", help="table or json")) -> None:
    """Show networks, links, addresses and endpoints, and whether each matches the file."""
    try:
        report = api.status(spec.load(topology), netns=ctx.netns, state_dir=ctx.state_dir)
    except VnetError as exc:
        _fail(exc)
    if output == "json":
        print(json.dumps(report, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"topology {report['topology']}" + (f" in netns {ctx.netns}" if ctx.netns else ""))
    for col in ("kind", "name", "details", "state"):
        table.add_column(col)
    colour = {"ok": "green", "missing": "yellow", "drift": "red", "extra": "magenta"}
    for row in report["resources"]:
        table.add_row(row["kind"], row["name"], row["details"], f"[{colour[row['state']]}]{row['state']}[/]")
    out.print(table)
    if report["forwards"]:
        out.print(_table("port forwards", FORWARD_COLUMNS, report["forwards"]))
    if report["leases"]:
        out.print(_table("DHCP leases", LEASE_COLUMNS, report["leases"]))
    out.print("in sync" if report["in_sync"] else "NOT in sync: run `vnet apply` to repair", highlight=False)
    if not report["in_sync"]:
        raise typer.Exit(1)


LEASE_COLUMNS = {"network": "network", "mac": "mac", "address": "address", "name": "name", "remaining": "expires in"}
FORWARD_COLUMNS = {"proto": "proto", "port": "port", "to": "to", "packets": "packets", "bytes": "bytes"}


def _table(title: str, columns: dict[str, str], rows: list[dict]):
    from rich.table import Table

    table = Table(title=title)
    for heading in columns.values():
        table.add_column(heading)
    for row in rows:
        table.add_row(*(str(row[key]) for key in columns))
    return table


@app.command()
def leases(topology: Path, output: str = typer.Option("table", "-o", "--output", help="table or json")) -> None:
    """List current DHCP leases of the topology's networks (MAC, IP, name, expiry)."""
    try:
        name = api.topology_name(topology)
    except VnetError as exc:
        _fail(exc)
    rows = [r.to_json() for r in api.leases(name, state_dir=ctx.state_dir, netns=ctx.netns)]
    if output == "json":
        print(json.dumps(rows, indent=2))
        return
    out.print(_table(f"leases of {name}", LEASE_COLUMNS, rows))


@app.command("qemu-args")
def qemu_args(topology: Path, vm: str, full: bool = typer.Option(False, "--full", help="the whole command line vnet runs")) -> None:
    """Print the QEMU arguments for a VM's NICs (taps made by `vnet apply`)."""
    try:
        topo = spec.load(topology)
        argv = api.qemu_args(topo, vm, netns=ctx.netns, state_dir=ctx.state_dir, full=full)
    except VnetError as exc:
        _fail(exc)
    print(" ".join(shlex.quote(a) for a in argv))


@app.command()
def console(topology: Path, vm: str, follow: bool = typer.Option(False, "-f", "--follow")) -> None:
    """Show what a VM printed on its serial console."""
    try:
        path = api.console_log(api.topology_name(topology), vm, state_dir=ctx.state_dir, netns=ctx.netns)
    except VnetError as exc:
        _fail(exc)
    if not path.exists():
        err.print(f"error: no console log for {vm} at {path}: is it running? (vnet status)")
        raise typer.Exit(1)
    if follow:
        os.execvp("tail", ["tail", "-n", "+1", "-f", str(path)])
    sys.stdout.write(path.read_text(errors="replace"))


@app.command()
def doctor(
    netns: Optional[str] = typer.Option(None, "--netns", help="look inside this namespace (default: the global --netns)"),
    output: str = typer.Option("text", "-o", "--output", help="text or json"),
) -> None:
    """Explain host settings that get in the way of vnet's networks (firewalls, br_netfilter)."""
    from vnet import doctor as doc

    try:
        findings = doc.examine(netns or ctx.netns, ctx.state_dir)
    except VnetError as exc:
        _fail(exc)
    print(doc.as_json(findings) if output == "json" else doc.report(findings), end="")


@app.command()
def schema() -> None:
    """Print the JSON Schema of topology files (for editors)."""
    print(json.dumps(spec.json_schema(), indent=2))


@sandbox_app.command("create")
def sandbox_create(name: str, dhcp: bool = typer.Option(False, help="the host's eth0 takes its address by DHCP")) -> None:
    """Create NAME-host, NAME-lan and NAME-wan namespaces (host, home router, internet)."""
    from vnet import sandbox

    try:
        sb = sandbox.create(name, state_dir=ctx.state_dir, host_dhcp=dhcp)
    except VnetError as exc:
        _fail(exc)
    out.print(f"sandbox {name}: run vnet with --netns {sb.host}; LAN {sb.lan} (192.0.2.1), WAN {sb.wan} ({sandbox.WAN_ADDR})")


@sandbox_app.command("destroy")
def sandbox_destroy(name: str) -> None:
    """Remove the sandbox's namespaces and processes."""
    from vnet import sandbox

    try:
        sandbox.destroy(name, state_dir=ctx.state_dir)
    except VnetError as exc:
        _fail(exc)
    out.print(f"sandbox {name} removed")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
