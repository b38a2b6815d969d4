"""The Python API: the same engine the command line uses.

    from vnet import api, spec
    topo = spec.load("examples/nat.yaml")
    api.apply(topo, netns="demo-host")
    print(api.status(topo, netns="demo-host")["in_sync"])
    api.destroy(topo.name, netns="demo-host")
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from vnet import qemuargs, spec, statedir
from vnet.desired import desired
from vnet.drivers import dnsmasq
from vnet.engine import DEFAULT_STATE_DIR, Engine, Planned
from vnet.errors import Problem, SpecError, VnetError
from vnet.headstart import HeadStart
from vnet.observe import Observation
from vnet.plan import Action, matches
from vnet.resources import Resource
from vnet.spec.models import Topology


def engine(topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, host: str | None = None) -> Engine:
    """`host`: this host's name among the topology's `hosts:`, where no address of it says so."""
    return Engine(topology, netns=netns, state_dir=state_dir, host=host)


def plan(topo: Topology, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, source: Path | str | None = None,
         host: str | None = None) -> Planned:
    """`host`: this host's name among the topology's `hosts:`, when it is not found by address."""
    return engine(topo.name, netns, state_dir, host).plan(topo, _source(source))


def apply(
    topo: Topology,
    netns: str | None = None,
    state_dir: Path | str = DEFAULT_STATE_DIR,
    source: Path | str | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    host: str | None = None,
    head: HeadStart | None = None,
) -> list[Action]:
    """Make the host match `topo`. `source` is the file it came from: its identity in the target
    (another file under the same name is refused unless `force`), recorded for `vnet list`; `log`
    hears each step as it is done; `head`, a head start begun with the file (headstart.begin),
    is taken over where it was made for this topology and target."""
    eng = engine(topo.name, netns, state_dir, host)
    if log is not None:
        eng.log = log
    actions = eng.apply(topo, _source(source), force, head)
    record_source(topo, netns, state_dir, source, changed=bool(actions))
    return actions


def _source(path: Path | str | None) -> str | None:
    return str(Path(path).resolve()) if path is not None else None


def destroy(topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, force: bool = False) -> list[Action]:
    """Remove what vnet made for `topology`; a namespace still running processes is refused
    unless `force` (which stops them)."""
    return engine(topology, netns, state_dir).destroy(force)


def check_name(name: str) -> str:
    """A topology name as the file's `name:` must be (it names a directory and kernel objects)."""
    try:
        return spec.models._name(name)
    except ValueError as exc:
        raise SpecError([Problem("name", f"{name!r} {exc}", "give the name as `vnet list` shows it")]) from None


def topology_name(path: Path | str) -> str:
    """The topology's name, even from a file that no longer validates (destroy must still work)."""
    try:
        return spec.load(path).name
    except SpecError as invalid:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError):
            raise invalid from None  # it says the file cannot be read
        from vnet.spec.validate import parse_yaml

        data = parse_yaml(text)
        name = data.get("name") if isinstance(data, dict) else None
        if isinstance(name, str):
            return check_name(name)
        raise


def state_of(topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR) -> Path:
    """The directory where vnet keeps a topology's state for one target namespace."""
    return statedir.target_root(state_dir, netns) / topology


def leases(topology: str, state_dir: Path | str = DEFAULT_STATE_DIR, netns: str | None = None) -> list[dnsmasq.Lease]:
    return dnsmasq.leases(state_of(topology, netns, state_dir))


def console_log(topology: str, vm: str, state_dir: Path | str = DEFAULT_STATE_DIR, netns: str | None = None) -> Path:
    return qemuargs.files(state_of(topology, netns, state_dir), vm)["console"]


def qemu_args(topo: Topology, vm: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, full: bool = False,
              bridge_helper: bool = False) -> list[str]:
    """A VM's NIC arguments (vnet's taps), or with `full` the whole command line vnet runs, or with
    `bridge_helper` NICs through qemu-bridge-helper (and its `-vnc`, if any) for an ordinary user."""
    if vm not in topo.vms:
        raise VnetError(f"no VM named {vm!r} in {topo.name} (known: {', '.join(topo.vms) or 'none'})")
    if bridge_helper:
        return qemuargs.bridge_helper_args(topo, vm) + qemuargs.display_args(topo, vm)
    if not full:
        return qemuargs.nic_args(topo, vm, vhost=os.path.exists("/dev/vhost-net"))
    eng = engine(topo.name, netns, state_dir)
    for r in desired(topo, eng.facts(topo, Observation(topo.name))):
        if r.kind == "vm" and r.key == vm:
            return list(r.get("argv"))
    raise VnetError(f"no VM named {vm!r}")


def forward_counters(topology: str, netns: str | None = None) -> list[dict]:
    """Each port forward with its packet and byte counters (the `iptables -t nat -vL` of vnet)."""
    from vnet.drivers.ns import Namespace
    from vnet.drivers import nft
    from vnet import names

    ns = Namespace(netns)
    try:
        return nft.forward_counters(ns, names.nft_table(topology))
    finally:
        ns.close()


def _has_table(obs: Observation, topology: str) -> bool:
    """Whether the observation found the topology's inet table, which holds its forwards: where it
    did not (not applied), `nft` is not run to count them (the same empty list, ~3 ms sooner)."""
    from vnet import names

    table = names.nft_table(topology)
    return any(t["family"] == "inet" and t["name"] == table for t in obs.tables)


def _plain(value):
    """A resource attribute as JSON has it: tuples as lists, frozen dicts (pairs) as objects."""
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value):
            return {k: _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    return value


def _lease_json(lease: dnsmasq.Lease, topo: Topology, now: float) -> dict:
    """A lease with its expiry as an absolute time (epoch seconds, None: infinite) and the seconds
    left as a number, and whether its address is inside the network's subnet as the file says it."""
    import ipaddress

    from vnet.spec.validate import addressing

    subnet = addressing(topo, lease.network).subnet if lease.network in topo.networks else None
    in_subnet = subnet is not None and ipaddress.IPv4Address(lease.address) in subnet
    infinite = lease.expires == 0
    return {
        "network": lease.network, "mac": lease.mac, "address": lease.address, "name": lease.name or None,
        "expires_at": None if infinite else lease.expires,
        "remaining": None if infinite else max(0, int(lease.expires - now)),
        "expired": not infinite and lease.expires <= now,
        "in_subnet": in_subnet,
        "subnet": str(subnet) if subnet else None,
    }


STATES = ("ok", "unrecorded", "missing", "drift", "extra")  # of one resource, from best to worst


def _rows(planned: Planned, nss) -> list[dict]:
    from vnet.drivers import sysctl

    owned = planned.observation.owned
    rows = []
    for r in planned.desired:
        have = owned.get(r.id)
        row = {"kind": r.kind, "name": r.key, "state": "ok", "attrs": _plain(dict((have or r).attrs)), "differs": {}, "note": None}
        if have is None:
            row["state"] = "missing"
            if r.kind in ("sysctl", "ifsysctl"):
                # the record of the value before is what is missing, not the value itself
                try:
                    value = nss.get(r.get("ns")).call(sysctl.read, r.get("path"))
                except (OSError, VnetError):
                    value = None  # its namespace is not there (yet)
                if value == r.get("value"):
                    row["state"] = "unrecorded"
                    row["note"] = (f"the kernel has it at {value} already; vnet has no record of the value before "
                                   "(an empty or new state directory): apply records it, so destroy can put it back")
                else:
                    row["note"] = f"the kernel has it at {value}" if value is not None else "the kernel has no such switch"
        elif not matches(r, have):
            row["state"] = "drift"
            row["differs"] = {k: {"want": _plain(v), "have": _plain(have.get(k))} for k, v in r.attrs if v is not None and have.get(k) != v}
        rows.append(row)
    want_ids = {r.id for r in planned.desired}
    rows += [{"kind": r.kind, "name": r.key, "state": "extra", "attrs": _plain(dict(r.attrs)), "differs": {},
              "note": "vnet made it, the file no longer declares it: apply removes it"}
             for rid, r in owned.items() if rid not in want_ids]
    return rows


def _worst(states) -> str:
    found = [s for s in states if s]
    return max(found, key=STATES.index) if found else "missing"


def _vm_process(topo: Topology, planned: Planned, name: str, state: Path) -> dict:
    from vnet.drivers import process
    from vnet.kinds.vm import stopped

    f = qemuargs.files(state, name)
    pid = process.running(f["pid"])
    r = planned.observation.owned.get(f"vm:{name}")
    argv = list(r.get("argv")) if r is not None else []

    def opt(flag: str) -> str | None:
        return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None

    vm = topo.vms[name]
    return {
        "name": name,
        "state": "running" if pid else ("stopped" if stopped(state, name) else "not running"),
        "stopped_by_user": stopped(state, name),
        "pid": pid,
        "accel": opt("-accel") or vm.accel,
        "memory": opt("-m") or vm.memory,
        "cpus": int(opt("-smp") or vm.cpus),
        "display": _vnc(topo, name),
        "console": str(f["serial"]) if pid and f["serial"].exists() else None,
        "console_log": str(f["console"]),
    }


def _vnc(topo: Topology, name: str) -> dict | None:
    """Where a VM's VNC server listens (`display: vnc`), or None."""
    n = qemuargs.vnc_displays(topo).get(name)
    if n is None:
        return None
    return {"kind": "vnc", "address": "127.0.0.1", "port": qemuargs.vnc_port(n), "display": n}


def _networks(topo: Topology, planned: Planned, rows: list[dict], leases_: list[dict], vms: dict[str, dict]) -> tuple[list[dict], dict]:
    """One view per network: mode, subnets, gateway, uplink, bridge and the members on it; and the
    mapping from every tap and veth name vnet makes to its endpoint or VM."""
    from vnet import names
    from vnet.facts import bridge_name, endpoints_on, guest_mac
    from vnet.spec.models import NetnsSpec, TapSpec
    from vnet.spec.validate import addressing, known_address

    obs = planned.observation
    state_of_row = {(r["kind"], r["name"]): r["state"] for r in rows}
    by_mac: dict[tuple[str, str], dict] = {}
    for lease in leases_:
        by_mac.setdefault((lease["network"], lease["mac"].lower()), lease)
    interfaces: dict[str, dict] = {}
    nets = []
    for net_name, net in topo.networks.items():
        addr = addressing(topo, net_name)
        br = bridge_name(topo, net_name)
        li = obs.links.get(br)
        uplink = net.uplink or (obs.default_uplink if net.mode == "nat" else None)
        members = []

        def member(name: str, kind: str, mac: str, host_if: str, fixed, resources: list[tuple[str, str]], hashed: bool, nic=None):
            lease = by_mac.get((net_name, mac.lower()))
            if fixed is not None:
                address = {"address": str(fixed), "source": "fixed"}
            elif lease is not None:
                address = {"address": lease["address"], "source": "lease", "expires_at": lease["expires_at"],
                           "remaining": lease["remaining"], "in_subnet": lease["in_subnet"]}
            else:
                address = None
            state = _worst(state_of_row.get(k) for k in resources if k in state_of_row)
            if kind == "vm" and state == "ok":
                state = vms[name]["state"] if vms[name]["state"] != "running" else "ok"
            if kind == "vm" and vms[name]["stopped_by_user"] and state == "ok":
                state = "stopped"
            host = obs.links.get(host_if)
            entry = {"name": name, "kind": kind, "nic": nic, "mac": mac, "address": address, "host_if": host_if,
                     "host_if_hashed": hashed, "host_if_up": bool(host and host.up), "state": state}
            members.append(entry)
            interfaces[host_if] = {"network": net_name, ("vm" if kind == "vm" else "endpoint"): name, "nic": nic,
                                   "kind": "tap" if kind in ("tap", "vm") else "veth", "hashed": hashed}

        for ep_name, ep in endpoints_on(topo, net_name):
            if isinstance(ep, TapSpec):
                host_if = names.endpoint_tap(topo.name, ep_name, ep.ifname)
                member(ep_name, "tap", guest_mac(topo, ep_name), host_if, None, [("tap", host_if)],
                       hashed=not ep.ifname and host_if != f"vt-{topo.name}-{ep_name}")
            elif isinstance(ep, NetnsSpec):
                host_if = names.veth_host(topo.name, ep_name)
                ns = names.endpoint_netns(topo.name, ep_name, ep.netns)
                member(ep_name, "netns", guest_mac(topo, ep_name), host_if, known_address(topo, ep_name, net_name),
                       [("veth", host_if), ("netns", ns)], hashed=host_if != f"ve-{topo.name}-{ep_name}")
        for vm_name, vm in topo.vms.items():
            for i, nic in enumerate(vm.nics):
                if nic.network != net_name:
                    continue
                host_if = qemuargs.nic_tap(topo, vm_name, i)
                member(vm_name, "vm", qemuargs.nic_mac(topo, vm_name, i), host_if, nic.address,
                       [("tap", host_if), ("vm", vm_name)], hashed=not nic.ifname and host_if != f"vt-{topo.name}-{vm_name}{i}", nic=i)
        stale = [lease for lease in leases_ if lease["network"] == net_name and not lease["in_subnet"] and not lease["expired"]]
        nets.append({
            "name": net_name,
            "mode": net.mode,
            "subnets": [str(addr.subnet)] if addr.subnet else [],
            "gateway": str(addr.gateway) if addr.gateway else None,
            "uplink": uplink,
            "bridge": {"name": br, "present": li is not None, "up": bool(li and li.up), "mac": li.mac if li else None,
                       "mtu": li.mtu if li else None, "state": state_of_row.get(("bridge", br), "missing")},
            "dhcp": {"range": [str(a) for a in dhcp_range(topo, net_name)], "lease": net.dhcp.lease} if net.dhcp else None,
            "members": members,
            "stale_leases": len(stale),
        })
    return nets, interfaces


def _overlays(topo: Topology, ns, netns: str | None, host: str | None) -> dict[str, dict]:
    """Per overlay network: its vxlan device, and each other host with the number of FDB entries
    that send to it (the flood entry included), read from the kernel."""
    from vnet import names, overlay
    from vnet.errors import VnetError

    nets = {n: net for n, net in topo.networks.items() if net.overlay is not None}
    if not nets:
        return {}
    try:
        here = host or overlay.locate(netns, topo).get("host")
    except VnetError:
        here = None
    out = {}
    links = {li.ifname: li for li in ns.nl.links()}
    for net_name, net in nets.items():
        dev = names.vxlan(topo.name, net_name)
        li = links.get(dev)
        entries = ns.nl.fdb(li.index) if li is not None else []
        count: dict[str, int] = {}
        flood: set[str] = set()
        for e in entries:
            if e.dst:
                count[e.dst] = count.get(e.dst, 0) + 1
                if e.mac == "00:00:00:00:00:00":
                    flood.add(e.dst)
        peers = [{"host": h, "address": a, "fdb": count.get(a, 0), "flood": a in flood}
                 for h, a in topo.hosts.items() if h != here]
        out[net_name] = {"device": dev, "present": li is not None, "up": bool(li and li.up), "vni": net.overlay.vni,
                         "port": net.overlay.port, "control": net.overlay.control, "host": here, "peers": peers}
    return out


def dhcp_range(topo: Topology, net_name: str):
    from vnet.spec.validate import dhcp_range as rng

    return rng(topo, net_name)


def frr_sessions(state: Path) -> list[dict]:
    from vnet.kinds import frr

    return frr.sessions(state)


def status(topo: Topology, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, host: str | None = None) -> dict:
    """What the host holds of `topo` and whether it matches the file, per network and per resource.

    `state` is one of: not_applied (nothing of it here and no claim), in_sync, drift (apply would
    change something: `changes` counts what it creates, changes and removes; rows say what
    differs), stale_leases (in sync, but DHCP clients hold leases outside the subnet the file
    gives now, from before a subnet change). `notes` explain it in words."""
    from vnet.drivers.ns import Namespaces

    eng = engine(topo.name, netns, state_dir, host)
    planned = eng.status(topo)
    obs = planned.observation
    now = time.time()
    with Namespaces(netns) as nss:
        rows = _rows(planned, nss)
        overlays = _overlays(topo, nss.host, netns, host)
    leases_ = [_lease_json(lease, topo, now) for lease in leases(topo.name, state_dir, netns)]
    vms = {name: _vm_process(topo, planned, name, eng.state) for name in topo.vms}
    networks, interfaces = _networks(topo, planned, rows, leases_, vms)
    for net in networks:
        net["overlay"] = overlays.get(net["name"])
    claim = eng.claims.read(topo.name)
    counts = {op: sum(1 for a in planned.actions if a.op == op) for op in ("create", "update", "delete")}
    stale = [lease for lease in leases_ if lease["subnet"] is not None and not lease["in_subnet"] and not lease["expired"]]
    notes: list[str] = []
    if claim is None and not obs.owned:
        state = "not_applied"
        notes.append(f"{topo.name} is not applied here: `vnet apply` makes it ({counts['create']} objects)")
    elif planned.actions:
        state = "drift"
        extra = [r for r in rows if r["state"] == "extra"]
        if extra and len(extra) == len(obs.owned) and len(obs.owned) > 0:
            notes.append(f"this file declares none of the {len(extra)} objects vnet made for {topo.name}: `vnet apply` of it would "
                         f"REMOVE ALL {len(extra)} (the same as `vnet destroy`)"
                         + (f"; they were applied from {claim.source}" if claim is not None and claim.source else ""))
        else:
            parts = []
            if counts["create"]:
                parts.append(f"create {counts['create']} (missing)")
            if counts["update"]:
                parts.append(f"change {counts['update']} (drift)")
            if counts["delete"]:
                parts.append(f"REMOVE {counts['delete']} (extra: made by vnet, no longer in the file)")
            notes.append("`vnet apply` would " + ", ".join(parts))
        unrecorded = [r for r in rows if r["state"] == "unrecorded"]
        if unrecorded:
            notes.append(f"{len(unrecorded)} forwarding switch(es) are at 1 already, but vnet has no record of their value before "
                         "(an empty or new --state-dir): apply only records them")
    elif stale:
        state = "stale_leases"
    else:
        state = "in_sync"
    if stale:
        nets = sorted({lease["network"] for lease in stale})
        notes.append(f"{len(stale)} DHCP client(s) hold leases outside the subnet of {', '.join(nets)} (from before a subnet change): "
                     "they keep the old address, gateway and DNS server until they renew — restart them, or renew the lease "
                     "(longest left: " + f"{max((x['remaining'] or 0) for x in stale)}s)")
    for vm in vms.values():
        if vm["stopped_by_user"]:
            notes.append(f"VM {vm['name']} was stopped by `vnet vm stop`: apply leaves it stopped; `vnet vm start` starts it")
    return {
        "topology": topo.name,
        "netns": netns,
        "state": state,
        "in_sync": state == "in_sync",
        "applied_from": claim.source if claim is not None else None,
        "changes": counts,
        "notes": notes,
        "recovered": planned.recovered,  # what was said of an interrupted run this call undid, if any
        "networks": networks,
        "interfaces": interfaces,
        "vms": list(vms.values()),
        "resources": rows,
        "forwards": forward_counters(topo.name, netns) if _has_table(obs, topo.name) else [],
        "leases": leases_,
        "dhcp_clients": dhcp_clients(topo.name, netns, state_dir),  # what vnet's clients hold (`address: dhcp`)
        "bgp": frr_sessions(eng.state),  # overlay control: evpn: vnet's FRR's sessions to the other hosts
    }


# --- what is applied: `vnet list` ----------------------------------------------------------------

SOURCE = "source.json"  # in a topology's state directory: its file and what it held, at the last apply


def record_source(topo: Topology, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, source: Path | str | None = None,
                  changed: bool = True) -> None:
    """Remember which file a topology was applied from (None: from the API), its size, and when
    it was applied. An apply that changed nothing (`changed` False) of the topology recorded as
    it is keeps the record as it was: writing it is a new file each time (1-3 ms of a no-op apply
    on this machine's ext4), and its time is then when the host was last made to match."""
    d = state_of(topo.name, netns, state_dir)
    if not (d / "claim.json").exists():  # nothing of it is applied (a rolled-back first apply)
        return
    record = {
        "file": str(Path(source).absolute()) if source is not None else None,
        "applied_at": int(time.time()),
        "networks": sorted(topo.networks),
        "endpoints": len(topo.endpoints),
        "vms": len(topo.vms),
    }
    if not changed:
        try:
            kept = json.loads((d / SOURCE).read_text())
        except (OSError, ValueError):
            kept = None
        if isinstance(kept, dict) and isinstance(kept.get("applied_at"), int) and {**kept, "applied_at": record["applied_at"]} == record:
            return
    tmp = d / f".{SOURCE}.{os.getpid()}"
    tmp.write_text(json.dumps(record, sort_keys=True))
    tmp.replace(d / SOURCE)


def applied(netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR) -> list[dict]:
    """Every topology applied in the target namespace, from the state directory alone (no host
    access): name, file, networks, endpoint and VM counts as applied, and whether a run of it
    was interrupted. `sync` adds whether the host matches the file."""
    root = state_of("x", netns, state_dir).parent  # where the target's topologies keep their state
    try:
        dirs = sorted(p for p in root.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    out = []
    for d in dirs:
        try:
            claim = json.loads((d / "claim.json").read_text())  # see the engine's claims
        except (OSError, ValueError):
            continue
        if not isinstance(claim, dict) or claim.get("netns") != (netns or ""):
            continue
        try:
            record = json.loads((d / SOURCE).read_text())
        except (OSError, ValueError):
            record = {}
        file = claim.get("source") or record.get("file")  # an engine that records the file has it in the claim
        out.append({
            "name": d.name,
            "netns": netns,
            "file": file,
            "file_exists": bool(file) and Path(file).is_file(),
            "applied_at": record.get("applied_at"),
            "networks": record.get("networks") or sorted(claim.get("bridges") or {}),
            "endpoints": record.get("endpoints"),
            "vms": record.get("vms"),
            "interrupted": (d / "journal.jsonl").exists(),
        })
    return out


def sync(entry: dict, state_dir: Path | str = DEFAULT_STATE_DIR) -> dict:
    """Whether the host matches an applied topology's file: state is one of in_sync, pending
    (`pending` changes), interrupted (a journal waits: any command on it undoes that run),
    no_file (applied through the API), file_missing, file_invalid, file_renamed (it names
    another topology now), unknown (the host could not be read: `detail` says why). Read-only:
    an interrupted run is reported, not undone."""
    def state(s: str, pending: int | None = None, detail: str | None = None) -> dict:
        return {"state": s, "pending": pending, "detail": detail}

    if entry["interrupted"]:
        return state("interrupted", detail=f"run any vnet command on {entry['name']} to undo it")
    if not entry["file"]:
        return state("no_file", detail="applied without a file: vnet destroy --name " + entry["name"])
    if not entry["file_exists"]:
        return state("file_missing", detail=f"{entry['file']} is gone: vnet destroy --name {entry['name']} removes it")
    try:
        topo = spec.load(entry["file"])
    except SpecError as exc:
        return state("file_invalid", detail=str(exc.problems[0]) if exc.problems else None)
    if topo.name != entry["name"]:
        return state("file_renamed", detail=f"{entry['file']} names topology {topo.name} now")
    try:
        planned = engine(topo.name, entry["netns"], state_dir).status(topo)
    except (VnetError, OSError) as exc:
        return state("unknown", detail=str(exc))
    return state("pending" if planned.actions else "in_sync", pending=len(planned.actions))


# --- endpoint conveniences and boot persistence (issue 10) ------------------------------------------


def dhcp_clients(topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR) -> list[dict]:
    """What each DHCP client vnet runs (`address: dhcp`) holds: address, router, DNS, expiry."""
    from vnet.drivers import udhcpc

    return udhcpc.leases(state_of(topology, netns, state_dir))


def set_lib_dir(state_dir: Path | str = DEFAULT_STATE_DIR, lib_dir: Path | str | None = None) -> None:
    """`--lib-dir`: where the topologies under `state_dir` keep what outlives a reboot (leases);
    None for the default (/var/lib/vnet beside /run/vnet, <state_dir>/.lib beside any other)."""
    from vnet import libdir

    libdir.configure(state_dir, lib_dir)


def lib_of(topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR) -> Path:
    from vnet import libdir

    return libdir.lib_of(state_of(topology, netns, state_dir))


def enable(path: Path | str, netns: str | None = None, state_dir: Path | str | None = None, lib_dir: Path | str | None = None,
           unit_dir: Path | str | None = None, program: str | None = None) -> Path:
    """`vnet enable FILE`: a systemd unit that applies FILE at boot (and destroys it at shutdown).
    The file must validate now; the unit names it by its absolute path."""
    from vnet import persist

    file = Path(path).resolve()
    topo = spec.load(file)
    unit = persist.Unit(topo.name, file, program or persist.vnet_program(), netns,
                        Path(os.path.abspath(state_dir)) if state_dir and Path(state_dir) != DEFAULT_STATE_DIR else None,
                        Path(os.path.abspath(lib_dir)) if lib_dir else None,
                        multi_host=bool(getattr(topo, "hosts", None)))
    return persist.enable(unit, Path(unit_dir) if unit_dir else persist.DEFAULT_UNIT_DIR)


def disable(path: Path | str, unit_dir: Path | str | None = None) -> Path | None:
    """`vnet disable FILE`: remove the unit `enable` wrote for FILE (the network stays)."""
    from vnet import persist

    file = Path(path).resolve()
    return persist.disable(topology_name(file), file, Path(unit_dir) if unit_dir else persist.DEFAULT_UNIT_DIR)


def export(topo: Topology, fmt: str) -> dict[str, str] | str:
    """`vnet export --format networkd|sh`: networkd → {file name: text}; sh → one script."""
    from vnet import export as _export

    return _export.export(topo, fmt)


def import_host(netns: str | None = None, name: str = "imported") -> str:
    """`vnet import`: a topology file (text) describing the hand-made network on the target."""
    from vnet.adopt import import_host as _import

    return _import(netns, name).text()


def adopt(path: Path | str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR):
    """`vnet adopt`: take over what an imported file describes, without rebuilding it (marks, then
    apply; hand-made NAT rules and dnsmasq replaced by vnet's own). Returns vnet.adopt.Adopted."""
    from vnet.adopt import adopt as _adopt

    return _adopt(path, netns, state_dir)


# --- VM lifecycle: `vnet vm start|stop|restart|console` ---------------------------------------
#
# A stopped VM is the user's wish, kept as a mark in the state directory (`vm-NAME.stopped`): the
# VM kind leaves it out of desired state, so plan and apply leave it stopped (its taps stay) until
# `vm start` clears the mark. `vm start` runs the engine on that VM alone: its create (or its
# restart, when the file changed it) and the creation of its missing taps, journaled and rolled
# back like any apply; other pending changes wait for `vnet apply`.


def _vm_engine(topo: Topology, vm: str, netns: str | None, state_dir: Path | str, what: str) -> Engine:
    from vnet.engine import require_net_admin

    if vm not in topo.vms:
        raise VnetError(f"no VM named {vm!r} in {topo.name} (known: {', '.join(topo.vms) or 'none'})")
    require_net_admin(what)
    eng = engine(topo.name, netns, state_dir)
    if eng.claims.read(topo.name) is None:
        raise VnetError(f"{topo.name} is not applied here: `vnet apply` it first (that starts VM {vm} too)")
    return eng


def vm_stop(topo: Topology, vm: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR,
            timeout: float | None = None, mark: bool = True) -> str:
    """Stop a VM gracefully (ACPI powerdown through QMP, a bounded wait, then kill) and, with
    `mark`, keep it stopped across apply. Says how it ended: powered off, killed or not running."""
    from vnet.drivers import qemu

    eng = _vm_engine(topo, vm, netns, state_dir, "vm stop")
    f = qemuargs.files(eng.state, vm)
    with eng._locked():
        if mark:
            tmp = f["stopped"].with_name(f["stopped"].name + ".tmp")
            tmp.write_text(f"stopped by `vnet vm stop` at {int(time.time())}\n")
            tmp.replace(f["stopped"])  # first: a stop cut short still leaves it wanted stopped
        how = qemu.shutdown(eng.state, vm, timeout)
        for k in ("argv", "agent", "qmp", "serial"):
            f[k].unlink(missing_ok=True)
    return how


def vm_start(topo: Topology, vm: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR,
             source: Path | str | None = None, log: Callable[[str], None] | None = None) -> list[Action]:
    """Start a VM as the file describes it (and clear `vm stop`'s mark): the engine runs that VM's
    actions alone. Returns them (none: it runs as the file says already)."""
    from vnet.drivers.ns import Namespaces

    eng = _vm_engine(topo, vm, netns, state_dir, "vm start")
    if log is not None:
        eng.log = log
    f = qemuargs.files(eng.state, vm)
    taps = {qemuargs.nic_tap(topo, vm, i) for i in range(len(topo.vms[vm].nics))}
    with eng._locked(), Namespaces(netns) as nss:
        eng._recover(nss)
        was_stopped = f["stopped"].exists()
        f["stopped"].unlink(missing_ok=True)
        try:
            with eng._host_locked():
                planned = eng._plan(nss, topo, _source(source))
            actions = [a for a in planned.actions
                       if (a.resource.kind == "vm" and a.resource.key == vm and a.op != "delete")
                       or (a.resource.kind == "tap" and a.resource.key in taps and a.op == "create")]
            eng._runner(nss).run(actions)
        except BaseException:
            if was_stopped:
                f["stopped"].write_text("stopped by `vnet vm stop`; `vnet vm start` failed\n")
            raise
    return actions


def console_socket(topology: str, vm: str, state_dir: Path | str = DEFAULT_STATE_DIR, netns: str | None = None) -> Path:
    """The VM's serial console socket (ttyS0), for an interactive console; VnetError if it is not
    running or was started by a vnet without one."""
    from vnet.drivers import process

    f = qemuargs.files(state_of(topology, netns, state_dir), vm)
    if process.running(f["pid"]) is None:
        raise VnetError(f"VM {vm} of {topology} is not running: `vnet vm start FILE {vm}` starts it")
    if not f["serial"].exists():
        raise VnetError(f"VM {vm} has no console socket (started by an older vnet): `vnet vm restart FILE {vm}` gives it one")
    return f["serial"]


# --- `vnet qemu-args FILE VM --bridge-helper` as root: vnet's lines in /etc/qemu/bridge.conf ----


def bridge_helper_install(topo: Topology, vm: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR,
                          source: Path | str | None = None, log: Callable[[str], None] | None = None) -> list[Action]:
    """Record that `vm` is run by an ordinary user through qemu-bridge-helper and write the
    `allow` lines of its bridges into the helper's ACL file now (kinds/bridgeconf.py): the engine
    runs those actions alone, under the topology's lock, journaled like any apply. From then on
    apply keeps the lines and destroy removes them. Returns the actions (none: they are there)."""
    from vnet.drivers.ns import Namespaces
    from vnet.kinds import bridgeconf

    eng = _vm_engine(topo, vm, netns, state_dir, "qemu-args --bridge-helper")
    if log is not None:
        eng.log = log
    with eng._locked(), Namespaces(netns) as nss:
        eng._recover(nss)
        bridgeconf.request(eng.state, vm)
        with eng._host_locked():
            planned = eng._plan(nss, topo, _source(source))
        actions = [a for a in planned.actions if a.resource.kind == "bridgeconf" and a.op != "delete"]
        eng._runner(nss).run(actions)
    return actions
