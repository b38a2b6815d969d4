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
    """The topology's tables as one resource: the digest in the inet table's comment, the rules of both."""
    rules, texts = 0, []
    for family in FAMILIES:
        proc = ns.run(["nft", "-j", "list", "table", family, name], check=False)
        if proc.returncode != 0:
            continue
        rules += sum(1 for i in json.loads(proc.stdout)["nftables"] if "rule" in i)
        texts.append(ns.run(["nft", "list", "table", family, name]).stdout)
    if not texts:
        return None
    # nft 1.0.6 leaves table comments out of its JSON; the text listing has them
    found = _COMMENT.search(texts[0])
    owner = nftrules.parse_table_comment(found.group(1) if found else None)
    digest = owner[1] if owner else None
    return make("ruleset", name, {"text": "".join(texts)}, digest=digest, rules=rules)


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
