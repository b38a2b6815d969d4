"""The `vnet` command line.

argparse from the standard library, and each command imports what it uses when it runs: `vnet
--help` loads no vnet module beyond this one, `vnet validate` the spec alone (its models, YAML), and
the engine and the drivers come in only for the commands that need them, and rich only where it
colours or folds a table (on a plain page `status` writes its tables with vnet.plaintable).

Exit codes: 0 done; 1 an error (one line on stderr, naming the path or field and the fix);
2 an invalid topology file or a usage error; `plan --exit-code` 0 no changes, 2 changes pending,
1 any error; `status` 0 in sync, 1 drift or stale DHCP leases, 3 not applied; 130 interrupted
(Ctrl-C), after apply or destroy undid what that run changed.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

STATE_DIR = "/run/vnet"  # = vnet.engine.DEFAULT_STATE_DIR (a unit test holds them equal), not imported: it costs the engine


def _say(line: str) -> None:
    print(line, flush=True)  # a step is seen as it is done, also through a pipe


def _red(text: str) -> str:
    return f"\033[31m{text}\033[0m" if sys.stderr.isatty() and not os.environ.get("NO_COLOR") else text


def _error(line: str) -> None:
    print(f"{_red('error')}: {line}", file=sys.stderr, flush=True)


def _print_json(data) -> None:
    import json

    print(json.dumps(data, indent=2, default=str))


def _where(a: argparse.Namespace) -> dict:
    return {"netns": a.netns, "state_dir": a.state_dir}


def _load(a: argparse.Namespace):
    """The topology file, its parsed data kept in the target's state root while it is unchanged
    (spec/parsed.py): for the commands a user repeats on one file."""
    from vnet import spec, statedir

    return spec.load(a.topology, keep=statedir.target_root(a.state_dir, a.netns))


def _rich_print(*things, width: int | None = None) -> None:
    from rich.console import Console

    from vnet.plaintable import Table

    console = Console(width=width)
    for thing in things:
        console.print(thing.to_rich() if isinstance(thing, Table) else thing, highlight=False)


def _show(things: list, width: int | None) -> None:
    """Tables and marked-up lines as rich prints them; on a plain page (not a terminal, nothing
    forcing colour, an encoding with box characters) written without importing rich."""
    from vnet import plaintable

    env = os.environ
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower()
    if width is not None and not sys.stdout.isatty() and encoding.startswith("utf") and not (env.get("FORCE_COLOR") or env.get("TTY_COMPATIBLE")):
        text = plaintable.render(things, width)
        if text is not None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
    _rich_print(*things, width=width)


def _table(title: str, columns: dict[str, str], rows: list[dict]):
    from vnet.plaintable import Table

    table = Table(title=title)
    for heading in columns.values():
        table.add_column(heading)
    for row in rows:
        table.add_row(*(str(row[key]) for key in columns))
    return table


# --- commands --------------------------------------------------------------------------------


def cmd_validate(a: argparse.Namespace) -> int:
    from vnet import spec

    topo = spec.load(a.topology)
    _say(spec.summary(a.topology, topo))
    return 0


def plan_json(planned, netns: str | None) -> dict:
    """The plan for scripts: each action with its op, kind, key and attributes (a delete's are
    those of what it removes; an update also has the old attributes and the names that change)."""
    actions = []
    for act in planned.actions:
        r = act.new if act.new is not None else act.old
        item = {"op": act.op, "kind": r.kind, "key": r.key, "attrs": dict(r.attrs), "summary": act.describe()}
        if act.op == "update":
            old = dict(act.old.attrs)
            item["old"] = old
            item["changed"] = sorted(k for k, v in r.attrs if v is not None and old.get(k) != v)
        actions.append(item)
    return {"topology": planned.topology, "netns": netns, "changes": len(actions), "actions": actions,
            "warnings": planned.warnings, "recovered": planned.recovered}


def cmd_plan(a: argparse.Namespace) -> int:
    from vnet import api

    planned = api.plan(_load(a), **_where(a), source=a.topology, host=a.host)
    if a.output == "json":
        _print_json(plan_json(planned, a.netns))
    else:
        if not planned.actions:
            _say("no changes: the host matches the topology")
        for act in planned.actions:
            _say(act.describe())
        for warning in planned.warnings:
            _say(f"warning: {warning}")
    return 2 if a.exit_code and planned.actions else 0


def cmd_apply(a: argparse.Namespace) -> int:
    import time

    from vnet import headstart

    # begun before the rest of vnet is imported and the file loaded: headstart.py says why
    with headstart.begin(a.topology, a.state_dir, a.netns) as head:
        from vnet import api

        topo = _load(a)
        t0 = time.monotonic()
        actions = api.apply(topo, **_where(a), source=a.topology, force=a.force, log=_say, host=a.host, head=head)
        dt = time.monotonic() - t0
    _say(f"applied {topo.name}: {len(actions)} changes in {dt:.2f}s" if actions else "no changes: the host matches the topology")
    return 0


def cmd_destroy(a: argparse.Namespace) -> int:
    if (a.topology is None) == (a.name is None):
        raise _Usage("destroy takes a topology file or --name NAME (one of the two; `vnet list` shows the names)")
    from pathlib import Path

    from vnet import api
    from vnet.errors import Problem, SpecError

    if a.name is not None:
        name = api.check_name(a.name)
    else:
        try:
            name = api.topology_name(a.topology)
        except SpecError as exc:
            if not Path(a.topology).exists() and len(exc.problems) == 1:
                p = exc.problems[0]
                exc.problems[0] = Problem(p.path, p.message, "check the path; if the file is lost, `vnet destroy --name NAME` removes the topology by its name (`vnet list` shows them)")
            raise
    known = api.state_of(name, a.netns, a.state_dir).is_dir()
    eng = api.engine(name, **_where(a))
    eng.log = _say
    removed = eng.destroy(a.force)
    tail = "" if removed or known else f" (nothing of {name} was found here; `vnet list` shows what is applied)"
    _say(f"destroyed {name}: {len(removed)} objects removed{tail}")
    return 0


STATUS_EXIT = {"in_sync": 0, "drift": 1, "stale_leases": 1, "not_applied": 3}
STATE_COLOUR = {"ok": "green", "unrecorded": "cyan", "missing": "yellow", "drift": "red", "extra": "magenta",
                "stopped": "blue", "not running": "yellow"}


def _address(addr: dict | None) -> str:
    if addr is None:
        return "-"
    if addr["source"] == "fixed":
        return f"{addr['address']} (fixed)"
    left = "infinite" if addr["remaining"] is None else f"{addr['remaining']}s left"
    outside = ", [red]OUTSIDE the subnet[/]" if not addr["in_subnet"] else ""
    return f"{addr['address']} (lease, {left}{outside})"


def _attrs(attrs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in attrs.items() if v not in (None, "", [], {}) and k not in ("digest",))


WATCH_MIN, WATCH_MAX = 0.5, 3600.0


def _display(d: dict | None) -> str:
    return "-" if not d else f"vnc {d['address']}:{d['port']} (display {d['display']})"


def cmd_status(a: argparse.Namespace) -> int:
    if a.watch is None:
        return _status_once(a)
    if not WATCH_MIN <= a.watch <= WATCH_MAX:
        raise _Usage(f"--watch: {a.watch:g} seconds is out of range — give {WATCH_MIN:g} to {WATCH_MAX:g} seconds between refreshes")
    if a.count is not None and a.count < 1:
        raise _Usage("--count: give 1 or more refreshes (or leave it out to watch until Ctrl-C)")
    import time

    redraw = sys.stdout.isatty() and a.output != "json"
    code, shown = 0, 0
    try:
        while True:
            if redraw:
                print("\033[H\033[2J", end="")  # home, clear: the tables redraw in place
            elif shown and a.output != "json":
                print()
            code = _status_once(a)
            shown += 1
            if a.count is not None and shown >= a.count:
                return code
            if a.output != "json":
                print(f"every {a.watch:g}s, {time.strftime('%H:%M:%S')} — Ctrl-C stops", flush=True)
            time.sleep(a.watch)
    except KeyboardInterrupt:  # the way a watch ends: not an error
        return 0


def _status_once(a: argparse.Namespace) -> int:
    from vnet import api

    topo = _load(a)
    report = api.status(topo, **_where(a), host=a.host)
    if a.tables:
        from vnet import live

        report["tables"] = live.tables(report, live.read(a.netns, topo.name))
    if a.output == "json":
        if a.watch is not None:
            import json

            print(json.dumps(report, default=str), flush=True)  # one line per refresh
        else:
            _print_json(report)
        return STATUS_EXIT[report["state"]]
    from vnet.plaintable import Table

    where = f" in netns {a.netns}" if a.netns else ""
    things: list = []
    for net in report["networks"]:
        br = net["bridge"]
        head = [net["mode"], ", ".join(net["subnets"]) or "no subnet"]
        if net["gateway"]:
            head.append(f"gateway {net['gateway']}")
        if net["uplink"]:
            head.append(f"uplink {net['uplink']}")
        head.append(f"bridge {br['name']} ({'up' if br['up'] else 'down' if br['present'] else 'missing'})")
        if net["dhcp"]:
            head.append(f"DHCP {net['dhcp']['range'][0]}–{net['dhcp']['range'][1]}")
        table = Table(title=f"network {net['name']}: " + ", ".join(head), title_justify="left")
        for col in ("member", "kind", "MAC", "address", "host interface", "state"):
            table.add_column(col)
        for m in net["members"]:
            name = m["name"] + (f" nic{m['nic']}" if m["nic"] is not None else "")
            st = m["state"]
            table.add_row(name, m["kind"], m["mac"], _address(m["address"]),
                          m["host_if"] + (" (hashed)" if m["host_if_hashed"] else ""), f"[{STATE_COLOUR.get(st, 'white')}]{st}[/]")
        things.append(table)
        ov = net.get("overlay")
        if ov:
            dev = f"{ov['device']} ({'up' if ov['up'] else 'down' if ov['present'] else 'missing'})"
            things.append(_table(f"overlay of {net['name']}: vxlan {dev}, VNI {ov['vni']}, port {ov['port']}, control {ov['control']}",
                                 OVERLAY_COLUMNS, [{**p, "flood": "yes" if p["flood"] else "no"} for p in ov["peers"]]))
    if a.tables:
        from vnet import live

        things += live.render(report["tables"])
    if report["vms"]:
        things.append(_table("VMs", {"name": "VM", "state": "state", "pid": "pid", "accel": "accel", "memory": "memory", "cpus": "cpus",
                                     "display": "display"},
                             [{**v, "pid": v["pid"] or "-", "display": _display(v.get("display"))} for v in report["vms"]]))
    if a.output == "wide":
        table = Table(title=f"resources of {report['topology']}{where}", title_justify="left")
        for col in ("kind", "name", "state", "details"):
            table.add_column(col, overflow="fold")
        for row in report["resources"]:
            details = _attrs({k: v for k, v in row["attrs"].items() if k not in ("argv", "inputs")})
            if row["kind"] == "vm":
                details = " ".join(row["attrs"].get("argv") or [])
            table.add_row(row["kind"], row["name"], f"[{STATE_COLOUR[row['state']]}]{row['state']}[/]", details)
        things.append(table)
    if report.get("bgp"):
        things.append(_table("BGP sessions (EVPN)", BGP_COLUMNS, report["bgp"]))
    if report["forwards"]:
        things.append(_table("port forwards", FORWARD_COLUMNS, report["forwards"]))
    if report["leases"] and a.output == "wide":
        things.append(_table("DHCP leases", LEASE_COLUMNS, [{**x, "remaining": "infinite" if x["remaining"] is None else f"{x['remaining']}s"}
                                                           for x in report["leases"]]))
    for row in report["resources"] if report["state"] != "not_applied" else ():  # what differs, said as such
        if row["state"] == "drift":
            diffs = "; ".join(f"{k}: {d['have']} → {d['want']}" for k, d in row["differs"].items())
            things.append(f"[red]drift[/]: {row['kind']} {row['name']} ({diffs})")
        elif row["state"] in ("missing", "extra", "unrecorded"):
            things.append(f"[{STATE_COLOUR[row['state']]}]{row['state']}[/]: {row['kind']} {row['name']}" + (f" — {row['note']}" if row["note"] else ""))
    state = report["state"]
    words = {"in_sync": "[green]in sync[/]", "drift": "[red]drift[/]", "not_applied": "[yellow]not applied[/]",
             "stale_leases": "[yellow]in sync, but DHCP clients hold stale leases[/]"}[state]
    things.append(f"{report['topology']}{where}: {words}")
    things += [f"  {note}" for note in report["notes"]]
    _show(things, width=None if sys.stdout.isatty() else 160)
    return STATUS_EXIT[state]


LEASE_COLUMNS = {"network": "network", "mac": "mac", "address": "address", "name": "name", "remaining": "expires in"}
OVERLAY_COLUMNS = {"host": "peer host", "address": "address", "fdb": "FDB entries", "flood": "flood entry"}
BGP_COLUMNS = {"peer": "peer", "state": "state", "received": "prefixes received", "sent": "sent", "up": "up"}
FORWARD_COLUMNS = {"proto": "proto", "port": "port", "to": "to", "packets": "packets", "bytes": "bytes"}
LIST_STATES = {
    "in_sync": "in sync",
    "pending": "{pending} changes pending",
    "interrupted": "interrupted run",
    "no_file": "no file",
    "file_missing": "file missing",
    "file_invalid": "file invalid",
    "file_renamed": "file renamed",
    "unknown": "unknown",
}


def cmd_list(a: argparse.Namespace) -> int:
    from vnet import api

    rows = []
    for entry in api.applied(**_where(a)):
        rows.append({**entry, **api.sync(entry, a.state_dir)})
    if a.output == "json":
        _print_json(rows)
        return 0
    if not rows:
        _say("no topologies applied" + (f" in netns {a.netns}" if a.netns else " here"))
        return 0

    def count(v) -> str:
        return "?" if v is None else str(v)

    shown = [
        {
            "name": r["name"],
            "file": (r["file"] or "-") + ("" if r["file_exists"] or not r["file"] else " (gone)"),
            "networks": ", ".join(r["networks"]),
            "endpoints": count(r["endpoints"]),
            "vms": count(r["vms"]),
            "state": LIST_STATES[r["state"]].format(**r),
        }
        for r in rows
    ]
    title = "applied topologies" + (f" in netns {a.netns}" if a.netns else "")
    _rich_print(_table(title, {k: k for k in ("name", "file", "networks", "endpoints", "vms", "state")}, shown))
    for r in rows:
        if r["state"] not in ("in_sync", "pending") and r["detail"]:
            _say(f"{r['name']}: {r['detail']}")
    return 0


def cmd_leases(a: argparse.Namespace) -> int:
    from vnet import api

    name = api.topology_name(a.topology)
    rows = [r.to_json() for r in api.leases(name, state_dir=a.state_dir, netns=a.netns)]
    if a.output == "json":
        _print_json(rows)
    else:
        _rich_print(_table(f"leases of {name}", LEASE_COLUMNS, rows))
    return 0


def cmd_qemu_args(a: argparse.Namespace) -> int:
    import shlex

    from vnet import api, spec

    if a.bridge_helper and a.full:
        raise _Usage("--bridge-helper and --full do not go together: --full is the command line vnet runs itself (with its taps)")
    topo = spec.load(a.topology)
    if a.bridge_helper:
        from vnet import qemuargs
        from vnet.kinds import bridgeconf

        argv = api.qemu_args(topo, a.vm, **_where(a), bridge_helper=True)
        print(" ".join(shlex.quote(x) for x in argv), flush=True)
        # the rest on stderr, so `qemu-system-x86_64 $(vnet qemu-args --bridge-helper …)` takes the arguments alone
        conf, lines = bridgeconf.conf_path(), qemuargs.bridge_conf_lines(topo, a.vm)
        applied = api.engine(topo.name, **_where(a)).claims.read(topo.name) is not None
        if os.geteuid() == 0 and applied:
            # recorded in the state directory and written now, through the engine: apply keeps
            # the lines, destroy removes them
            api.bridge_helper_install(topo, a.vm, **_where(a), source=a.topology,
                                      log=lambda m: print(m, file=sys.stderr, flush=True))  # stdout is QEMU's arguments
            note = [f"# {conf} allows the bridge(s) (vnet's marked lines; `vnet destroy` removes them):", *lines]
        else:
            why = "root must run this command once" if applied else "`vnet apply` the topology, then root must run this command once"
            note = [f"# {conf} must allow the bridge(s): {why} to install these lines (vnet keeps them until destroy):", *lines]
        if not _setuid(qemuargs.BRIDGE_HELPER):
            note.append(f"# {qemuargs.BRIDGE_HELPER} is not setuid root here, so it fails for an ordinary user: "
                        f"`chmod u+s {qemuargs.BRIDGE_HELPER}` (or run QEMU with CAP_NET_ADMIN)")
        if a.netns:
            note.append(f"# the bridges are in netns {a.netns}: run QEMU there (`ip netns exec {a.netns} …`)")
        note.append("# the helper's taps are not vnet's: the spoofing guards, isolation and rate limits of the file do not apply to them")
        print("\n".join(note), file=sys.stderr, flush=True)
        return 0
    argv = api.qemu_args(topo, a.vm, **_where(a), full=a.full)
    print(" ".join(shlex.quote(x) for x in argv))
    return 0


def _setuid(path: str) -> bool:
    import stat

    try:
        st = os.stat(path)
    except OSError:
        return False
    return bool(st.st_mode & stat.S_ISUID) and st.st_uid == 0


def cmd_console(a: argparse.Namespace) -> int:
    from vnet import api

    path = api.console_log(api.topology_name(a.topology), a.vm, state_dir=a.state_dir, netns=a.netns)
    if not path.exists():
        _error(f"no console log for {a.vm} at {path}: is it running? (vnet status)")
        return 1
    if a.follow:
        os.execvp("tail", ["tail", "-n", "+1", "-f", str(path)])
    sys.stdout.write(path.read_text(errors="replace"))
    return 0


def cmd_vm_stop(a: argparse.Namespace) -> int:
    from vnet import api, spec

    how = api.vm_stop(spec.load(a.topology), a.vm, **_where(a), timeout=a.timeout)
    tail = {"powered off": "the guest powered off (ACPI powerdown)",
            "killed": f"the guest did not power off within {a.timeout if a.timeout is not None else 'the'}s of the ACPI powerdown: killed",
            "not running": "it was not running"}[how]
    _say(f"VM {a.vm} stopped: {tail}; apply leaves it stopped until `vnet vm start`")
    return 0


def cmd_vm_start(a: argparse.Namespace) -> int:
    from vnet import api, spec

    actions = api.vm_start(spec.load(a.topology), a.vm, **_where(a), source=a.topology, log=_say)
    _say(f"VM {a.vm} started" if actions else f"VM {a.vm} runs already as the file describes it")
    return 0


def cmd_vm_restart(a: argparse.Namespace) -> int:
    from vnet import api, spec

    topo = spec.load(a.topology)
    how = api.vm_stop(topo, a.vm, **_where(a), timeout=a.timeout, mark=False)
    _say(f"VM {a.vm}: {how}")
    api.vm_start(topo, a.vm, **_where(a), source=a.topology, log=_say)
    _say(f"VM {a.vm} restarted")
    return 0


ESCAPE = b"\x1d"  # Ctrl-]


def cmd_vm_console(a: argparse.Namespace) -> int:
    """Relay the terminal to the VM's serial console socket until Ctrl-] (or the VM stops)."""
    import select
    import socket

    from vnet import api

    path = api.console_socket(api.topology_name(a.topology), a.vm, state_dir=a.state_dir, netns=a.netns)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(str(path))
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = None
    if os.isatty(stdin):
        import termios
        import tty

        saved = termios.tcgetattr(stdin)
        tty.setraw(stdin)
    print(f"console of VM {a.vm} (Ctrl-] leaves; one client at a time)\r", file=sys.stderr, flush=True)
    code = 0
    try:
        while True:
            ready, _, _ = select.select([conn, stdin], [], [])
            if conn in ready:
                data = conn.recv(65536)
                if not data:
                    print("\r\nthe console closed: the VM stopped\r", file=sys.stderr, flush=True)
                    code = 1
                    break
                os.write(stdout, data)
            if stdin in ready:
                data = os.read(stdin, 4096)
                if not data:
                    break
                if ESCAPE in data:
                    conn.sendall(data.split(ESCAPE, 1)[0])
                    break
                conn.sendall(data)
    finally:
        conn.close()
        if saved is not None:
            import termios

            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    print("\r\nleft the console", file=sys.stderr, flush=True)
    return code


def cmd_doctor(a: argparse.Namespace) -> int:
    from vnet import doctor as doc

    findings = doc.examine(a.netns, a.state_dir)
    print(doc.as_json(findings) if a.output == "json" else doc.report(findings), end="")
    return 0


def cmd_graph(a: argparse.Namespace) -> int:
    from vnet import ops, spec

    text = ops.graph(spec.load(a.topology), a.format, a.live, **_where(a))
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    from vnet import check, ops, spec

    outside: bool | str = False if a.no_outside else (a.outside or True)
    report = ops.check(spec.load(a.topology), **_where(a), outside=outside, timeout=a.timeout)
    if a.output == "json":
        _print_json(report.to_json())
    else:
        check.render(report)
    return 0 if report.ok else 1


def cmd_enable(a: argparse.Namespace) -> int:
    from vnet import api

    unit = api.enable(a.topology, **_where(a), lib_dir=a.lib_dir, unit_dir=a.unit_dir)
    _say(f"wrote {unit}: the topology is applied at boot (systemctl daemon-reload && systemctl enable {unit.name})")
    return 0


def cmd_disable(a: argparse.Namespace) -> int:
    from vnet import api

    unit = api.disable(a.topology, unit_dir=a.unit_dir)
    _say(f"removed {unit} (the network stays as it is)" if unit else "no unit of vnet's for this file: nothing to remove")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from pathlib import Path

    from vnet import api, spec

    out = api.export(spec.load(a.topology), a.format)
    if isinstance(out, str):
        sys.stdout.write(out)
        return 0
    target = Path(a.dir or ".")
    target.mkdir(parents=True, exist_ok=True)
    for name, text in out.items():
        (target / name).write_text(text)
        _say(f"wrote {target / name}")
    return 0


def cmd_import(a: argparse.Namespace) -> int:
    from vnet import api

    text = api.import_host(a.netns, a.name)
    if a.file:
        from pathlib import Path

        Path(a.file).write_text(text)
        _say(f"wrote {a.file}: review it, then `vnet adopt {a.file}` takes the network over without rebuilding it")
    else:
        sys.stdout.write(text)
    return 0


def cmd_adopt(a: argparse.Namespace) -> int:
    from vnet import api

    done = api.adopt(a.topology, **_where(a))
    for act in getattr(done, "actions", []):
        _say(act.describe())
    for what in ("marked", "removed_rules", "stopped"):
        for item in getattr(done, what, None) or []:
            _say(f"{what.replace('_', ' ')}: {item}")
    _say(f"adopted {a.topology}: `vnet plan` shows no changes; `vnet destroy` removes exactly what was imported")
    return 0


def cmd_schema(a: argparse.Namespace) -> int:
    from vnet import spec

    _print_json(spec.json_schema())
    return 0


def cmd_sandbox_create(a: argparse.Namespace) -> int:
    from vnet import sandbox

    sb = sandbox.create(a.name, state_dir=a.state_dir, host_dhcp=a.dhcp, hosts=a.hosts)
    where = " / ".join(f"--netns {h}" for h in sb.host_names)
    _say(f"sandbox {a.name}: run vnet with {where}; LAN {sb.lan}, WAN {sb.wan} ({sandbox.WAN_ADDR})")
    return 0


def cmd_sandbox_destroy(a: argparse.Namespace) -> int:
    from vnet import sandbox

    sandbox.destroy(a.name, state_dir=a.state_dir)
    _say(f"sandbox {a.name} removed")
    return 0


# --- the parser --------------------------------------------------------------------------------


class _Usage(Exception):
    """A command was called the wrong way: argparse's usage error, exit 2."""


def _globals(p: argparse.ArgumentParser, top: bool) -> None:
    """--netns and --state-dir, before the command or after it (`vnet apply --netns X f.yaml`)."""
    d = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("--netns", metavar="NS", help="act inside this network namespace (it plays the host)", **({"default": None} | d))
    p.add_argument("--state-dir", metavar="DIR", help=f"where vnet keeps journals and records (default: {STATE_DIR})", **({"default": STATE_DIR} | d))
    p.add_argument("--host", metavar="NAME", help="this host's name among the topology's `hosts:` (default: found by a local address)",
                   **({"default": None} | d))
    p.add_argument("--lib-dir", metavar="DIR", help="where what outlives a reboot (DHCP leases) is kept (default: /var/lib/vnet beside /run/vnet)",
                   **({"default": None} | d))


def _output(p: argparse.ArgumentParser | _Recipe, choices: tuple[str, ...]) -> None:
    p.add_argument("-o", "--output", choices=choices, default=choices[0], help=f"{' or '.join(choices)} (default: {choices[0]})")


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, with the terminal's width asked once: argparse makes a formatter for
    every add_argument (to check its metavar), and each asked the terminal again."""

    _columns: int | None = None

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None) -> None:
        if width is None:
            if _Formatter._columns is None:
                _Formatter._columns = _terminal_columns()
            width = _Formatter._columns - 2  # as HelpFormatter does
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    """shutil.get_terminal_size().columns, without importing shutil (and bz2, lzma with it: ~2 ms
    of every start-up): $COLUMNS, else the terminal's width, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Parser(argparse.ArgumentParser):
    """argparse's parser, writing its help with _Formatter."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


class _Recipe:
    """A command's parser before it is made: what `command` says of it and the arguments added."""

    def __init__(self, prog: str, func, description: str, then) -> None:
        self.prog, self.func, self.description, self.then = prog, func, description, then
        self.arguments: list[tuple[tuple, dict]] = []

    def add_argument(self, *args, **kwargs) -> None:
        self.arguments.append((args, kwargs))

    def make(self) -> argparse.ArgumentParser:
        p = _Parser(prog=self.prog, description=self.description)
        _globals(p, top=False)
        for args, kwargs in self.arguments:
            p.add_argument(*args, **kwargs)
        p.set_defaults(func=self.func, parser=p)
        if self.then is not None:
            self.then(p)
        return p


class _Parsers(dict):
    """The commands' parsers by name, each made from its recipe when it is first looked up."""

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        found = super().__getitem__(name)
        if isinstance(found, _Recipe):
            found = self[name] = found.make()
        return found


class _Commands(argparse._SubParsersAction):
    """The commands, each one's parser made only when the command is chosen: argparse looks up a
    translation of each of a parser's messages as it makes it (a few file look-ups each), and the
    two dozen parsers of vnet's commands cost ~6 ms of every start-up, of which a run uses one.
    `vnet --help` lists the commands from their help lines alone."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._name_parser_map = self.choices = _Parsers()

    def add_parser(self, name: str, *, help: str, func, description: str | None = None, then=None) -> _Recipe:  # type: ignore[override]
        self._choices_actions.append(self._ChoicesPseudoAction(name, (), help))
        recipe = self._name_parser_map[name] = _Recipe(f"{self._prog_prefix} {name}", func, description or help, then)
        return recipe


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="vnet",
        description="Declarative virtual networks for VMs and containers.",
        epilog="`vnet COMMAND --help` describes a command.",
        formatter_class=_Formatter,
    )
    _globals(top, top=True)
    sub = top.add_subparsers(title="commands", metavar="COMMAND", action=_Commands)

    def command(name: str, func, help: str, description: str | None = None, then=None) -> _Recipe:
        """`then(parser)` adds what is more than arguments (a command's own commands) once it is made."""
        return sub.add_parser(name, help=help, description=description, func=func, then=then)

    p = command("validate", cmd_validate, "check a topology file and print every problem (the host is not consulted: `plan` checks it)")
    p.add_argument("topology", help="topology file (YAML)")

    p = command("plan", cmd_plan, "print the changes apply would make (nothing when the host matches)")
    p.add_argument("topology", help="topology file (YAML)")
    _output(p, ("text", "json"))
    p.add_argument("--exit-code", action="store_true", help="exit 0 when nothing is pending, 2 when changes are, 1 on an error")

    p = command("apply", cmd_apply, "make the host match the topology; on any failure, undo everything this run changed",
                "Make the host match the topology, printing each step as it is done. On any failure, or Ctrl-C "
                "(exit 130), everything this run changed is undone.")
    p.add_argument("topology", help="topology file (YAML)")
    p.add_argument("--force", action="store_true",
                   help="take over a topology of the same name applied from another file; stop processes in namespaces it deletes")

    p = command("destroy", cmd_destroy, "remove exactly what vnet made for a topology",
                "Remove exactly what vnet made for a topology, named by its file or, when the file is lost, by "
                "--name (`vnet list` shows the names). A file holding only `name: NAME` works too.")
    p.add_argument("topology", nargs="?", help="topology file (YAML)")
    p.add_argument("--name", help="the topology's name, for a file that is lost")
    p.add_argument("--force", action="store_true", help="stop processes still running in the namespaces vnet made")

    p = command("check", cmd_check, "probe real traffic between every pair against what the file declares (exit 1 on a mismatch)",
                "Probe every pair among endpoints, VMs, gateways, the host and the outside (ICMP, TCP, UDP) and a "
                "full-MTU don't-fragment echo per network; print the matrix and explain each mismatch. Exit 0 when "
                "everything is as declared, 1 otherwise.")
    p.add_argument("topology", help="topology file (YAML)")
    _output(p, ("table", "json"))
    p.add_argument("--outside", metavar="NS", help="namespace that plays the outside (default: the sandbox's internet, if any)")
    p.add_argument("--no-outside", action="store_true", help="leave the outside out")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds a probe waits for its answer (default 1)")

    p = command("import", cmd_import, "write a topology file describing a network built by hand on the target (what it cannot say: comments)")
    p.add_argument("--name", default="imported", help="the topology's name in the file (default: imported)")
    p.add_argument("-f", "--file", metavar="FILE", help="write it here (default: standard output)")

    p = command("adopt", cmd_adopt, "take over an imported network without rebuilding it (its rules and dnsmasq become vnet's)")
    p.add_argument("topology", help="topology file (YAML), as `vnet import` wrote it")

    p = command("enable", cmd_enable, "install a systemd unit that applies the topology at boot (and destroys it at shutdown)")
    p.add_argument("topology", help="topology file (YAML)")
    p.add_argument("--unit-dir", metavar="DIR", help="where the unit goes (default: /etc/systemd/system)")

    p = command("disable", cmd_disable, "remove the unit `vnet enable` installed for the topology")
    p.add_argument("topology", help="topology file (YAML)")
    p.add_argument("--unit-dir", metavar="DIR", help="where the unit is (default: /etc/systemd/system)")

    p = command("export", cmd_export, "the topology as systemd-networkd files or a shell script, for a distribution to own")
    p.add_argument("topology", help="topology file (YAML)")
    p.add_argument("--format", choices=("networkd", "sh"), required=True)
    p.add_argument("-d", "--dir", metavar="DIR", help="networkd: where the files go (default: the current directory)")

    p = command("graph", cmd_graph, "draw the topology (mermaid, dot, svg through Graphviz, html)")
    p.add_argument("topology", help="topology file (YAML)")
    p.add_argument("--format", choices=("mermaid", "dot", "svg", "html"), default="mermaid", help="default: mermaid")
    p.add_argument("--live", action="store_true", help="colour each object by its state on the host (in sync, missing, drifted)")

    p = command("list", cmd_list, "every topology applied in the target namespace: file, networks, counts, sync state")
    _output(p, ("table", "json"))

    p = command("status", cmd_status, "one table per network (members with MAC, address, host interface, state) and whether the host matches the file",
                "One table per network: mode, subnets, gateway, uplink, bridge, and its members (endpoints and VM NICs) "
                "with MAC, address (fixed or leased), host-side tap or veth and state; then what differs. "
                "Exit 0 in sync, 1 drift (or DHCP clients holding leases from before a subnet change), 3 not applied. "
                "-o wide adds every resource with its details; -o json is the same as objects and numbers.")
    p.add_argument("topology", help="topology file (YAML)")
    _output(p, ("table", "wide", "json"))
    p.add_argument("--tables", action="store_true",
                   help="also each bridge's live tables: forwarding database (MAC → port → member, learned/local/static/remote, age), "
                        "neighbours (address → MAC, state) and per-port counters (rx/tx packets and bytes, drops, guard drops)")
    p.add_argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                   help=f"redraw every SECONDS (default 2; {WATCH_MIN:g} to {WATCH_MAX:g}) until Ctrl-C, which exits 0")
    p.add_argument("--count", type=int, default=None, metavar="N", help="with --watch: stop after N refreshes (exit: the last status's)")

    p = command("leases", cmd_leases, "list current DHCP leases of the topology's networks (MAC, IP, name, expiry)")
    p.add_argument("topology", help="topology file (YAML)")
    _output(p, ("table", "json"))

    p = command("qemu-args", cmd_qemu_args, "print the QEMU arguments for a VM's NICs (taps made by `vnet apply`)")
    p.add_argument("topology", help="topology file (YAML)")
    p.add_argument("vm", help="the VM's name in the file")
    p.add_argument("--full", action="store_true", help="the whole command line vnet runs")
    p.add_argument("--bridge-helper", action="store_true",
                   help="NICs through qemu-bridge-helper (-netdev bridge), for QEMU run by an ordinary user; "
                        "run once as root (topology applied), it adds vnet's marked `allow` lines to /etc/qemu/bridge.conf "
                        "(or $VNET_QEMU_BRIDGE_CONF), kept by apply and removed by destroy; otherwise they go to stderr")

    p = command("console", cmd_console, "show what a VM printed on its serial console")
    p.add_argument("topology", help="topology file (YAML)")
    p.add_argument("vm", help="the VM's name in the file")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what it prints (tail -f)")

    command("vm", None, "start, stop, restart a VM, or attach to its serial console", then=_vm_commands)

    p = command("doctor", cmd_doctor, "explain host settings that get in the way of vnet's networks (firewalls, br_netfilter)")
    _output(p, ("text", "json"))

    command("schema", cmd_schema, "print the JSON Schema of topology files (for editors)")

    command("sandbox", None, "throwaway namespaces that play host, LAN and internet", then=_sandbox_commands)
    return top


def _vm_commands(p: argparse.ArgumentParser) -> None:
    vm = p.add_subparsers(title="commands", metavar="COMMAND")

    def vm_command(name: str, func, help: str, timeout: bool = False) -> None:
        s = vm.add_parser(name, help=help, description=help)
        _globals(s, top=False)
        s.add_argument("topology", help="topology file (YAML)")
        s.add_argument("vm", help="the VM's name in the file")
        if timeout:
            s.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                           help="how long the guest may take to power off after the ACPI powerdown before it is killed (default 30)")
        s.set_defaults(func=func, parser=s)

    vm_command("start", cmd_vm_start, "start a VM as the file describes it (also one `vm stop` stopped)")
    vm_command("stop", cmd_vm_stop, "shut a VM down (ACPI powerdown, a bounded wait, then kill); apply leaves it stopped until `vm start`", timeout=True)
    vm_command("restart", cmd_vm_restart, "shut a VM down gracefully and start it again", timeout=True)
    vm_command("console", cmd_vm_console, "attach the terminal to a VM's serial console (interactive; Ctrl-] leaves)")


def _sandbox_commands(p: argparse.ArgumentParser) -> None:
    sandbox = p.add_subparsers(title="commands", metavar="COMMAND")
    s = sandbox.add_parser("create", help="create NAME-host, NAME-lan and NAME-wan namespaces (host, home router, internet)")
    _globals(s, top=False)
    s.add_argument("name")
    s.add_argument("--dhcp", action=argparse.BooleanOptionalAction, default=False, help="the host's eth0 takes its address by DHCP")
    s.add_argument("--hosts", type=int, metavar="N", help="N hosts (NAME-h1 … NAME-hN) on a routed underlay, for overlays")
    s.set_defaults(func=cmd_sandbox_create, parser=s)
    s = sandbox.add_parser("destroy", help="remove the sandbox's namespaces and processes")
    _globals(s, top=False)
    s.add_argument("name")
    s.set_defaults(func=cmd_sandbox_destroy, parser=s)


# --- errors ------------------------------------------------------------------------------------


def os_problem(exc: OSError, state_dir: str) -> str:
    """An OS error as one line: the path, what is wrong, and the fix."""
    import errno

    path = exc.filename if exc.filename is not None else ""
    what = exc.strerror or exc.__class__.__name__
    state = os.path.abspath(state_dir)
    in_state = bool(path) and (os.path.abspath(str(path)) + "/").startswith(state.rstrip("/") + "/")
    where = "point --state-dir at a directory vnet can write (default: /run/vnet)" if in_state else "check the path"
    fix = {
        errno.EEXIST: f"it is a file, not a directory: {where}" if in_state else "it is in the way: move or remove it",
        errno.ENOTDIR: f"a part of it is a file, not a directory: {where}",
        errno.ENOENT: f"it cannot be made there: {where}" if in_state else "check the path",
        errno.EROFS: f"the file system is read-only: {where}" if in_state else "the file system is read-only: choose a writable place",
        errno.EACCES: f"run vnet as root, or {where}" if in_state else "check its permissions, or run vnet as root",
        errno.EPERM: f"run vnet as root, or {where}" if in_state else "check its permissions, or run vnet as root",
        errno.ENOSPC: "free some space on that file system",
    }.get(exc.errno, where)
    subject = f"{path}: " if path else ""
    return f"{subject}{what} — {fix}"


def report(exc: BaseException, a: argparse.Namespace) -> int:
    """Print a failure the user can act on as one line (an invalid file: one line per problem) and
    return the exit code; anything else is a bug and propagates with its traceback."""
    from vnet.errors import SpecError, StepFailed, VnetError

    code = getattr(exc, "exit_code", 1)
    if isinstance(exc, StepFailed) and isinstance(exc.cause, KeyboardInterrupt):
        rolled_back = "ROLLBACK INCOMPLETE" not in str(exc)
        tail = "everything this run changed was undone" if rolled_back else "ROLLBACK INCOMPLETE: run the command again to finish undoing it"
        _error(f"interrupted at step {exc.step} ({exc.action}); {tail}")
        return 130
    if isinstance(exc, StepFailed) and isinstance(exc.cause, OSError):
        _error(str(exc).replace(str(exc.cause), os_problem(exc.cause, a.state_dir), 1))
    elif isinstance(exc, StepFailed) and not str(exc.cause):
        _error(str(exc).replace("failed: ;", f"failed: {exc.cause.__class__.__name__};", 1))
    elif isinstance(exc, SpecError):
        for p in exc.problems:
            _error(str(p))
    elif isinstance(exc, VnetError):
        _error(str(exc))
    elif isinstance(exc, OSError):
        _error(os_problem(exc, a.state_dir))
        code = 1
    else:
        raise exc
    return 1 if getattr(a, "exit_code", False) else code


def run(argv: list[str] | None = None) -> int:
    p = parser()
    if argv is None:
        argv = sys.argv[1:]
    if not argv:
        p.print_help()
        return 2
    a = p.parse_args(argv)
    if getattr(a, "func", None) is None:  # `vnet sandbox` or `vnet vm` alone
        (getattr(a, "parser", None) or p).print_help()
        return 2
    try:
        if a.lib_dir is not None:
            from vnet import api

            api.set_lib_dir(a.state_dir, a.lib_dir)
        return a.func(a)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except _Usage as exc:
        a.parser.error(str(exc))
    except BrokenPipeError:  # `vnet plan | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        return report(exc, a)
    return 0  # not reached: argparse's error exits


def main() -> None:
    # A command is one short process that builds large graphs of objects it keeps to its end (the
    # desired state, the observation) and makes few cycles: at CPython's default threshold (700
    # allocations) the collector ran some 120 times in a no-op apply at N=1000, ~12 ms of it, and
    # ~4 ms of a 55 ms `vnet status`, freeing next to nothing. What is loaded so far is frozen out of
    # its scans; it still runs, rarely, so a long command (`vm console`) collects its cycles.
    gc.freeze()
    gc.set_threshold(100_000, 20, 20)
    try:
        code = run()
    except KeyboardInterrupt:  # a second Ctrl-C, while the first was being reported
        code = 130
    except SystemExit as exc:  # argparse: --help, a usage error
        if exc.code is not None and not isinstance(exc.code, int):
            raise
        code = exc.code or 0
    leave(code)


def leave(code: int) -> None:
    """Exit as the interpreter would, less its finalization: after a command, freeing every
    module and object one by one is 7 ms of `vnet validate` and 11 ms of `vnet status` (a sixth
    of it), and nothing a finished command needs. What a normal exit does first is done: threads
    are waited for (threading's own shutdown), atexit functions run, stdout and stderr flushed;
    where that fails (a closed pipe), the normal exit reports it."""
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()  # type: ignore[attr-defined]
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 — whatever it is, the interpreter's own exit handles it
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    main()
