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


def observe_table(ns: Namespace, family: str, name: str) -> Resource | None:
    proc = ns.run(["nft", "-j", "list", "table", family, name], check=False)
    if proc.returncode != 0:
        return None
    rules = sum(1 for i in json.loads(proc.stdout)["nftables"] if "rule" in i)
    text = ns.run(["nft", "list", "table", family, name]).stdout
    # nft 1.0.6 leaves table comments out of its JSON; the text listing has them
    found = _COMMENT.search(text)
    owner = nftrules.parse_table_comment(found.group(1) if found else None)
    digest = owner[1] if owner else None
    return make("ruleset", name, {"text": text, "family": family}, digest=digest, rules=rules)


def _transaction(ns: Namespace, script: str) -> None:
    proc = ns.run(["nft", "-f", "-"], input=script, check=False)
    if proc.returncode != 0:
        raise VnetError(f"nft rejected the ruleset in {ns.label}: {proc.stderr.strip()}")


def replace(ns: Namespace, r: Resource) -> None:
    """Create or replace the table in one transaction: nobody ever sees a half-written table."""
    name = r.key
    _transaction(ns, f"table inet {name}\ndelete table inet {name}\n{r.get('text')}")


def delete(ns: Namespace, r: Resource) -> None:
    _transaction(ns, f"table inet {r.key}\ndelete table inet {r.key}\n")
