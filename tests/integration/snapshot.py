"""A full picture of a namespace's network state, to prove "no change" by comparing two."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from vnet.drivers import ns as nsmod
from vnet.drivers.ns import Namespace


def _run(ns: str, *argv: str) -> str:
    return subprocess.run(Namespace(ns).argv(list(argv)), capture_output=True, text=True, check=True).stdout


def inside(ns: str, fn):
    """fn's result, run inside namespace ns (where /proc/sys/net is that namespace's)."""
    n = Namespace(ns)
    try:
        return n.call(fn)
    finally:
        n.close()


def sysctl(ns: str, path: str) -> str:
    return inside(ns, lambda: (Path("/proc/sys") / path).read_text().strip())


def _sysctls(ns: str) -> dict[str, str]:
    def read() -> dict[str, str]:
        out = {"ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()}
        for conf in Path("/proc/sys/net/ipv4/conf").iterdir():
            out[f"{conf.name}.forwarding"] = (conf / "forwarding").read_text().strip()
        out["ipv6.all.forwarding"] = Path("/proc/sys/net/ipv6/conf/all/forwarding").read_text().strip()
        for conf in Path("/proc/sys/net/ipv6/conf").iterdir():
            for name in ("forwarding", "force_forwarding", "accept_ra"):
                if (conf / name).exists():
                    out[f"ipv6.{conf.name}.{name}"] = (conf / name).read_text().strip()
        return out

    return inside(ns, read)


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


_COUNTERS = re.compile(r"counter packets \d+ bytes \d+")
_CHAIN_COUNTERS = re.compile(r"\[\d+:\d+\]")


_LEASED = re.compile(r"(set leased \{[^}]*?)\n\s*elements = \{[^}]*\}", re.S)


def _nft(ns: str) -> str:
    # packet counters (iptables-nft puts one on every rule) tick with traffic by themselves, and
    # the addresses DHCP snooping learned (set `leased`, with timeouts) come and go with leases
    return _LEASED.sub(r"\1", _COUNTERS.sub("counter", _run(ns, "nft", "list", "ruleset")))


def _iptables(ns: str) -> str:
    """iptables-save of every table, without its timestamps and counters."""
    text = _run(ns, "iptables-save")
    return "\n".join(_CHAIN_COUNTERS.sub("[]", line) for line in text.splitlines() if not line.startswith("#"))


def _json(*argv: str) -> list:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    return json.loads(proc.stdout or "[]") if proc.returncode == 0 else []


def namespaces(host: str) -> list[str]:
    """The namespaces that concern `host`: the sandbox's own, those joined to `host` by a veth, and
    those joined to nothing that vnet marked for a topology with links in `host`. Namespaces of
    other sandboxes, or joined only to other namespaces, or alone and not known here (another
    test's, being built) do not show up, so tests running at the same time in other sandboxes do
    not disturb the comparison. Tests that must also see leftovers that are alone (a run killed
    right after it made a namespace) list them by name as well."""
    sandbox = host[: -len("-host")] if host.endswith("-host") else host
    here = {(link.get("ifalias") or "").split(":")[1] for link in _json("ip", "-n", host, "-j", "link", "show")
            if (link.get("ifalias") or "").startswith("vnet:")}
    out = []
    for n in nsmod.listed():
        if n == host:
            out.append(n)
            continue
        links = _json("ip", "-n", n, "-j", "link", "show")
        if not links:
            continue  # vanished meanwhile: not ours
        alias = next((link.get("ifalias") for link in links if link.get("ifname") == "lo"), None) or ""
        if alias.startswith("vnet-sandbox:"):
            if alias == f"vnet-sandbox:{sandbox}":
                out.append(n)
            continue
        peers = {link["link_netnsid"] for link in links if "link_netnsid" in link}
        if not peers:
            # made by vnet, joined to nothing: ours when its topology has links in `host`
            if alias.startswith("vnet:") and alias.split(":")[1] in here:
                out.append(n)
            continue
        ids = {i.get("nsid"): i.get("name") for i in _json("ip", "-n", n, "-j", "netns", "list-id")}
        if any(ids.get(p) == host for p in peers):
            out.append(n)
    return out


def take(ns: str) -> dict:
    """Links, addresses, routes (all tables), nft ruleset, iptables, forwarding sysctls, and the namespace list."""
    return {
        "links": _strip_volatile(json.loads(_run(ns, "ip", "-d", "-j", "link", "show"))),
        "addresses": sorted(
            (a["ifname"], i["local"], i["prefixlen"])
            for a in json.loads(_run(ns, "ip", "-j", "addr", "show"))
            for i in a.get("addr_info", [])
        ),
        # both families (`table all` lists IPv6 too); routes from IPv6 router advertisements count
        # down their lifetime by themselves
        "routes": sorted(
            json.dumps({k: v for k, v in r.items() if k != "expires"}, sort_keys=True)
            for r in json.loads(_run(ns, "ip", "-j", "route", "show", "table", "all"))
        ),
        "nft": _nft(ns),
        "iptables": _iptables(ns),
        "sysctl": _sysctls(ns),
        "namespaces": namespaces(ns),
    }
