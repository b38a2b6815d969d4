"""vnet's nftables table: observed with `nft -j`, replaced whole in one `nft -f` transaction."""

from __future__ import annotations

import json
import re

from vnet import nftrules
from vnet.drivers.ns import Namespace
from vnet.errors import VnetError
from vnet.resources import Resource, make

_COMMENT = re.compile(r'^\s*comment "([^"]*)"\s*$', re.M)


def list_tables(ns: Namespace) -> list[dict]:
    """Every inet/ip table of the namespace with its comment, for ownership checks."""
    proc = ns.run(["nft", "-j", "list", "tables"])
    out = []
    for item in json.loads(proc.stdout or '{"nftables": []}')["nftables"]:
        if "table" in item:
            out.append(item["table"])
    return out


FAMILIES = ("inet", "bridge")  # a topology's tables: routing/NAT, and its bridge ports


def observe_table(ns: Namespace, name: str) -> Resource | None:
    """The topology's tables as one resource: the digest in the inet table's comment, the rule
    count of both. Listed terse (no set elements), so observing costs the same at 10 forwards or
    10,000; the full text to restore them is fetched only when a change is about to be made."""
    rules, found_any, comment = 0, False, None
    for family in FAMILIES:
        proc = ns.run(["nft", "-t", "list", "table", family, name], check=False)
        if proc.returncode != 0:
            continue
        found_any = True
        rules += _count_rules(proc.stdout)
        if family == "inet":
            # nft 1.0.6 leaves table comments out of its JSON; the text listing has them
            match = _COMMENT.search(proc.stdout)
            comment = match.group(1) if match else None
    if not found_any:
        return None
    owner = nftrules.parse_table_comment(comment)
    return make("ruleset", name, digest=owner[1] if owner else None, rules=rules)


def _count_rules(text: str) -> int:
    count, in_chain = 0, False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("chain "):
            in_chain = True
        elif line == "}":
            in_chain = False
        elif in_chain and line and not line.startswith(("type ", "comment ")):
            count += 1
    return count


def with_text(ns: Namespace, r: Resource) -> Resource:
    """`r` with the full listing of its tables, to restore them exactly."""
    if r.get("text") is not None:
        return r
    texts = []
    for family in FAMILIES:
        proc = ns.run(["nft", "list", "table", family, r.key], check=False)
        if proc.returncode == 0:
            texts.append(proc.stdout)
    return make("ruleset", r.key, {"text": "".join(texts)}, **r.a)


def forward_counters(ns: Namespace, name: str) -> list[dict]:
    """Elements of the forwards map with their packet and byte counters."""
    proc = ns.run(["nft", "-j", "list", "map", "inet", name, "forwards"], check=False)
    if proc.returncode != 0:
        return []
    out = []
    for item in json.loads(proc.stdout)["nftables"]:
        for elem in item.get("map", {}).get("elem", []):
            key, value = elem
            counter = {}
            if isinstance(key, dict) and "elem" in key:
                counter = key["elem"].get("counter", {})
                key = key["elem"]["val"]
            proto, port = key["concat"]
            to_addr, to_port = value["concat"]
            out.append({"proto": proto, "port": port, "to": f"{to_addr}:{to_port}",
                        "packets": counter.get("packets", 0), "bytes": counter.get("bytes", 0)})
    return out


def _transaction(ns: Namespace, script: str) -> None:
    proc = ns.run(["nft", "-f", "-"], input=script, check=False)
    if proc.returncode != 0:
        raise VnetError(f"nft rejected the ruleset in {ns.label}: {proc.stderr.strip()}")


def _drop_all(name: str) -> str:
    # "table X" first makes "delete table X" valid whether or not the table exists
    return "".join(f"table {f} {name}\ndelete table {f} {name}\n" for f in FAMILIES)


def replace(ns: Namespace, r: Resource) -> None:
    """Create or replace the tables in one transaction: nobody ever sees a half-written ruleset."""
    _transaction(ns, _drop_all(r.key) + r.get("text"))


def delete(ns: Namespace, r: Resource) -> None:
    _transaction(ns, _drop_all(r.key))
