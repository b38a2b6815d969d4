"""Live tables of a topology's bridges, in a Linux networking guide's terms (`vnet status --tables`):
the bridge's forwarding database (MAC → port → endpoint or VM; learned, local, static or remote),
its neighbour table (address → MAC, state) and per-port counters.

Read in the target namespace with three commands in all, whatever the number of bridges:
`bridge -j -s fdb show`, `ip -j neigh show` and `ip -j -s link show`; the parsing is pure
(`fdb_rows`, `neigh_rows`, `port_rows`) and unit-tested on their JSON.

Counters are the host side's: a port's `rx` is what its endpoint or VM sent into the bridge, `tx`
what the bridge delivered to it. `dropped` is the kernel's own count on that link; frames vnet's
guards drop are not in it (nftables drops them before the link counts a drop), see `guard_drops`.
"""

from __future__ import annotations

import json
from typing import Any

# an FDB entry's type, from its `state` and flags as `bridge -j fdb` prints them
LOCAL, LEARNED, STATIC, REMOTE = "local", "learned", "static", "remote"


def _owner_of_mac(network: dict) -> dict[str, str]:
    """MAC (lower case) → who has it: a member's name (with its NIC for a VM), or the bridge."""
    out: dict[str, str] = {}
    for m in network.get("members", []):
        out[m["mac"].lower()] = m["name"] + (f" nic{m['nic']}" if m.get("nic") is not None else "")
    mac = (network.get("bridge") or {}).get("mac")
    if mac:
        out.setdefault(mac.lower(), "bridge (the host)")
    return out


def _owner_of_port(network: dict, interfaces: dict[str, dict]) -> dict[str, str]:
    """Port name → the member it belongs to (the uplink named as such, the bridge as the host)."""
    out = {}
    for ifname, info in interfaces.items():
        if info.get("network") == network["name"]:
            who = info.get("vm") or info.get("endpoint") or "?"
            out[ifname] = who + (f" nic{info['nic']}" if info.get("nic") is not None else "")
    if network.get("uplink") and network.get("mode") == "bridged":
        out.setdefault(network["uplink"], "uplink")
    out.setdefault(network["bridge"]["name"], "the host")
    return out


def fdb_rows(entries: list[dict], bridge: str, network: dict, interfaces: dict[str, dict]) -> list[dict]:
    """The bridge's FDB from `bridge -j -s fdb show`: entries learned or kept by the bridge (its
    ports' and its own), without the multicast filters links keep for themselves (`self`)."""
    macs, ports = _owner_of_mac(network), _owner_of_port(network, interfaces)
    rows = []
    for e in entries:
        port = e.get("ifname")
        flags = e.get("flags") or []
        if e.get("master") != bridge and not (port == bridge and "self" not in flags):
            continue
        if e.get("dst"):
            kind = REMOTE
        elif e.get("state") == "permanent":
            kind = LOCAL
        elif e.get("state") in ("static", "noarp") or "static" in flags:
            kind = STATIC
        else:
            kind = LEARNED
        mac = e.get("mac", "").lower()
        mac_of = macs.get(mac) or ("the port itself" if kind == LOCAL and port != bridge else None)
        rows.append({
            "mac": mac, "port": port, "port_of": ports.get(port), "mac_of": mac_of, "type": kind,
            "vlan": e.get("vlan"), "age": e.get("updated") if kind == LEARNED else None, "remote": e.get("dst"),
        })
    order = {LEARNED: 0, STATIC: 1, REMOTE: 2, LOCAL: 3}
    rows.sort(key=lambda r: (order[r["type"]], r["port"] or "", r["mac"]))
    return rows


def neigh_rows(entries: list[dict], bridge: str, network: dict) -> list[dict]:
    """The neighbour table of the bridge (the host's ARP and ND entries on it), from `ip -j neigh`."""
    macs = _owner_of_mac(network)
    rows = []
    for e in entries:
        if e.get("dev") != bridge:
            continue
        mac = (e.get("lladdr") or "").lower() or None
        state = e.get("state") or []
        rows.append({"address": e.get("dst"), "mac": mac, "mac_of": macs.get(mac) if mac else None,
                     "state": ",".join(state) if isinstance(state, list) else str(state)})
    rows.sort(key=lambda r: (":" in (r["address"] or ""), r["address"] or ""))
    return rows


def port_rows(links: list[dict], bridge: str, network: dict, interfaces: dict[str, dict], guard_drops: dict[str, int] | None) -> list[dict]:
    """Per-port counters of the bridge's ports (and the bridge itself, the host's own port), from
    `ip -j -s link show`."""
    ports = _owner_of_port(network, interfaces)
    rows = []
    for li in links:
        name = li.get("ifname")
        if li.get("master") != bridge and name != bridge:
            continue
        stats = li.get("stats64") or li.get("stats") or {}
        rx, tx = stats.get("rx", {}), stats.get("tx", {})
        rows.append({
            "port": name, "member": ports.get(name), "up": "UP" in (li.get("flags") or []),
            "rx_packets": rx.get("packets", 0), "rx_bytes": rx.get("bytes", 0), "rx_dropped": rx.get("dropped", 0),
            "tx_packets": tx.get("packets", 0), "tx_bytes": tx.get("bytes", 0), "tx_dropped": tx.get("dropped", 0),
            "guard_drops": None if guard_drops is None or name == bridge else guard_drops.get(name, 0),
        })
    rows.sort(key=lambda r: (r["port"] == bridge, r["port"]))
    return rows


def _json(ns, argv: list[str]) -> list[dict]:
    proc = ns.run(argv, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return json.loads(proc.stdout)


def guard_drop_counts(listing: list[dict]) -> dict[str, int]:
    """Port → frames vnet's guards dropped, from `nft -j list set bridge TABLE guard_drops`."""
    out: dict[str, int] = {}
    for item in listing:
        for elem in (item.get("set") or {}).get("elem", []):
            if isinstance(elem, dict) and "elem" in elem:
                port, counter = elem["elem"].get("val"), elem["elem"].get("counter") or {}
                if isinstance(port, str):
                    out[port] = out.get(port, 0) + counter.get("packets", 0)
    return out


def read(netns: str | None, topology: str | None = None) -> dict[str, Any]:
    """The raw dumps of the target namespace: fdb, neigh and link as the commands print them, and
    the guards' drops per port of the topology's bridge table (None: it has no such set)."""
    from vnet import names
    from vnet.drivers.ns import Namespace
    from vnet.nftrules import GUARD_DROPS

    ns = Namespace(netns)
    try:
        dumps: dict[str, Any] = {
            "fdb": _json(ns, ["bridge", "-j", "-s", "fdb", "show"]),
            "neigh": _json(ns, ["ip", "-j", "neigh", "show"]),
            "link": _json(ns, ["ip", "-j", "-s", "link", "show"]),
            "guard_drops": None,
        }
        if topology is not None:
            proc = ns.run(["nft", "-j", "list", "set", "bridge", names.nft_table(topology), GUARD_DROPS], check=False)
            if proc.returncode == 0:
                dumps["guard_drops"] = guard_drop_counts(json.loads(proc.stdout).get("nftables", []))
        return dumps
    finally:
        ns.close()


def tables(report: dict, dumps: dict[str, Any]) -> list[dict]:
    """One entry per network of a `status` report: its bridge's FDB, neighbours and port counters
    (`guard_drops` per port: None where the topology has no guard rules, e.g. not applied)."""
    guard_drops = dumps.get("guard_drops")
    out = []
    for net in report["networks"]:
        br = net["bridge"]["name"]
        out.append({
            "network": net["name"], "bridge": br, "present": net["bridge"]["present"],
            "fdb": fdb_rows(dumps["fdb"], br, net, report["interfaces"]),
            "neighbours": neigh_rows(dumps["neigh"], br, net),
            "ports": port_rows(dumps["link"], br, net, report["interfaces"], guard_drops),
        })
    return out


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def render(live: list[dict]) -> list:
    """Rich tables for `vnet status --tables`: per network the FDB, the neighbours, the ports."""
    from rich.table import Table

    things: list = []
    for t in live:
        if not t["present"]:
            things.append(f"network {t['network']}: bridge {t['bridge']} is missing: no live tables")
            continue
        fdb = Table(title=f"network {t['network']}: forwarding database of {t['bridge']}", title_justify="left")
        for col in ("MAC", "of", "port", "port of", "type", "age"):
            fdb.add_column(col)
        for r in t["fdb"]:
            extra = f" → {r['remote']}" if r["remote"] else ""
            fdb.add_row(r["mac"], r["mac_of"] or "-", r["port"] or "-", r["port_of"] or "-", r["type"] + extra,
                        "-" if r["age"] is None else f"{r['age']}s")
        neigh = Table(title=f"network {t['network']}: neighbours of {t['bridge']} (the host's ARP/ND)", title_justify="left")
        for col in ("address", "MAC", "of", "state"):
            neigh.add_column(col)
        for r in t["neighbours"]:
            neigh.add_row(r["address"] or "-", r["mac"] or "-", r["mac_of"] or "-", r["state"])
        ports = Table(title=f"network {t['network']}: ports of {t['bridge']} (rx: sent into the bridge, tx: delivered to the port)",
                      title_justify="left")
        for col in ("port", "member", "rx packets", "rx bytes", "tx packets", "tx bytes", "dropped (rx/tx)", "guard drops"):
            ports.add_column(col, justify="right" if col not in ("port", "member") else "left")
        for r in t["ports"]:
            guard = "-" if r["guard_drops"] is None else str(r["guard_drops"])
            ports.add_row(r["port"] + ("" if r["up"] else " (down)"), r["member"] or "-", str(r["rx_packets"]), _size(r["rx_bytes"]),
                          str(r["tx_packets"]), _size(r["tx_bytes"]), f"{r['rx_dropped']}/{r['tx_dropped']}", guard)
        things += [fdb, neigh, ports]
    return things
