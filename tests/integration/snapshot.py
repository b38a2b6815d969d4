"""A full picture of a namespace's network state, to prove "no change" by comparing two."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from vnet.drivers import ns as nsmod
from vnet.drivers.ns import Namespace


def _run(ns: str, *argv: str) -> str:
    return subprocess.run(Namespace(ns).argv(list(argv)), capture_output=True, text=True, check=True).stdout


def _sysctls(ns: str) -> dict[str, str]:
    def read() -> dict[str, str]:
        out = {"ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()}
        for conf in Path("/proc/sys/net/ipv4/conf").iterdir():
            out[f"{conf.name}.forwarding"] = (conf / "forwarding").read_text().strip()
        return out

    n = Namespace(ns)
    try:
        return n.call(read)
    finally:
        n.close()


def _strip_volatile(links: list[dict]) -> list[dict]:
    keep = ("ifname", "link_type", "address", "flags", "master", "mtu", "ifalias", "operstate", "linkinfo")
    out = []
    for link in links:
        item = {k: link.get(k) for k in keep}
        if item["linkinfo"]:
            data = {k: v for k, v in (item["linkinfo"].get("info_data") or {}).items() if not k.endswith("_timer")}
            item["linkinfo"] = {"kind": item["linkinfo"].get("info_kind"), "data": data}  # timers tick by themselves
        out.append(item)
    return sorted(out, key=lambda x: x["ifname"])


def take(ns: str) -> dict:
    """Links, addresses, routes (all tables), nft ruleset, forwarding sysctls, and the namespace list."""
    return {
        "links": _strip_volatile(json.loads(_run(ns, "ip", "-d", "-j", "link", "show"))),
        "addresses": sorted(
            (a["ifname"], i["local"], i["prefixlen"])
            for a in json.loads(_run(ns, "ip", "-j", "addr", "show"))
            for i in a.get("addr_info", [])
        ),
        "routes": sorted(json.dumps(r, sort_keys=True) for r in json.loads(_run(ns, "ip", "-j", "route", "show", "table", "all"))),
        "nft": _run(ns, "nft", "list", "ruleset"),
        "sysctl": _sysctls(ns),
        "namespaces": nsmod.listed(),
    }
