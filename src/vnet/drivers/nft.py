"""vnet's nftables tables: observed over nfnetlink, replaced whole in one `nft -f` transaction."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from vnet import names, nftrules
from vnet.drivers import rtnl
from vnet.drivers.ns import Namespace
from vnet.errors import VnetError
from vnet.resources import Resource, make

FAMILY_NAMES = {1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}
FAMILIES = ("inet", "bridge")  # a topology's tables: routing/NAT, and its bridge ports


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _flowtable_module_on_disk() -> bool:
    """A module that could give this kernel flowtables later (installed, not yet loaded)."""
    d = Path("/lib/modules") / os.uname().release / "kernel/net/netfilter"
    return any((d / f"nf_flow_table_inet.ko{ext}").exists() for ext in ("", ".xz", ".zst", ".gz"))


def flowtables(ns: Namespace, remembered: Path) -> bool:
    """Whether the kernel offloads flows to nftables flowtables, asked once per boot and kept in
    the file `remembered` (asking costs a transaction the kernel aborts, ~8 ms: every plan, status
    and no-op apply of a nat network would pay it). A "no" is asked again while a module that
    could change it lies on disk (loading it is what asking does); a "yes" stays (the module then is
    loaded). The file holds the boot's id and yes or no, nothing that is run."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return ns.nft.flowtables()
    try:
        said_boot, said = remembered.read_text().split()
        if said_boot == boot and said in ("yes", "no") and (said == "yes" or not _flowtable_module_on_disk()):
            return said == "yes"
    except (OSError, ValueError):
        pass
    answer = ns.nft.flowtables()
    try:
        tmp = remembered.with_name(f".{remembered.name}.{os.getpid()}")
        tmp.write_text(f"{boot} {'yes' if answer else 'no'}\n")
        tmp.replace(remembered)
    except OSError:
        pass  # not kept: asked again next time
    return answer


def dump(ns: Namespace) -> tuple[list[dict], dict[tuple[str, str], int]]:
    """Every table (family, name, comment) and the rule count per table, read over netlink.

    No set elements are dumped, so this costs the same with 10 forwards or 10,000 (the `nft`
    command would fetch every element even to print a terse listing)."""
    nf = ns.nft
    tables = [{"family": FAMILY_NAMES.get(f, str(f)), "name": name, "comment": _comment(ud)} for f, name, ud in nf.tables()]
    rules = {(FAMILY_NAMES.get(f, ""), name): n for (f, name), n in nf.rule_counts().items()}
    return tables, rules


def _comment(userdata: bytes | None) -> str | None:
    """The comment in a table's user data: TLV type 0, length, text, NUL."""
    if not userdata or len(userdata) <= 2:
        return None
    return userdata[2 : 2 + userdata[1]].rstrip(b"\0").decode(errors="replace")


def observe_table(ns: Namespace, name: str, tables: list[dict], rules: dict[tuple[str, str], int]) -> Resource | None:
    """The topology's tables as one resource, from a `dump`: the digest in the inet table's
    comment, the rule count of both. The full text to restore them is fetched only when a change
    is about to be made."""
    mine = [t for t in tables if t["name"] == name and t["family"] in FAMILIES]
    if not mine:
        return None
    comment = next((t["comment"] for t in mine if t["family"] == "inet"), None)
    owner = names.parse_digest_mark(comment)
    count = sum(rules.get((f, name), 0) for f in FAMILIES)
    return make("ruleset", name, digest=owner[1] if owner else None, elements=_generation(ns, name), rules=count)


def _generation(ns: Namespace, name: str) -> str | None:
    """The element digest kept in the one-element set `generation` (reading it reads no other set)."""
    keys = ns.nft.set_keys(rtnl.NFPROTO_INET, name, "generation")
    return f"{int.from_bytes(keys[0], sys.byteorder):08x}" if keys else None


def with_text(ns: Namespace, r: Resource, saved: Path) -> Resource:
    """`r` with the text to restore its tables exactly: the text vnet last wrote when the tables
    still carry its digests and its rule count (cheap, and fit for an element-only change), else a
    full listing (rules flushed or added by hand: what the host holds is not what vnet wrote)."""
    if r.get("text") is not None:
        return r
    try:
        text = saved.read_text()
    except FileNotFoundError:
        text = None
    if text is not None:
        skeleton, sets = nftrules.parse(text)
        found = names.parse_digest_mark(next((x.split('"')[1] for x in text.splitlines() if x.strip().startswith("comment ")), ""))
        if (
            found
            and found[1] == r.get("digest")
            and sets.get(("inet", "generation")) == [f"0x{r.get('elements')}"]
            and nftrules.rule_count(skeleton) == r.get("rules")
        ):
            return make("ruleset", r.key, {"text": text, "rendered": True}, **r.a)
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
    out: dict[tuple[str, int], dict] = {}
    for item in json.loads(proc.stdout)["nftables"]:
        for elem in item.get("map", {}).get("elem", []):
            key, value = elem
            counter = {}
            if isinstance(key, dict) and "elem" in key:
                counter = key["elem"].get("counter", {})
                key = key["elem"]["val"]
            *_, proto, port = key["concat"]  # keyed by the way in too: one element per way, summed
            to_addr, to_port = value["concat"]
            row = out.setdefault((proto, port), {"proto": proto, "port": port, "to": f"{to_addr}:{to_port}", "packets": 0, "bytes": 0})
            row["packets"] += counter.get("packets", 0)
            row["bytes"] += counter.get("bytes", 0)
    return list(out.values())


def _transaction(ns: Namespace, script: str, fail: bool = True) -> bool:
    proc = ns.run(["nft", "-f", "-"], input=script, check=False)
    if proc.returncode != 0 and fail:
        raise VnetError(f"nft rejected the ruleset in {ns.label}: {proc.stderr.strip()}")
    return proc.returncode == 0


def _drop_all(name: str) -> str:
    # "table X" first makes "delete table X" valid whether or not the table exists
    return "".join(f"table {f} {name}\ndelete table {f} {name}\n" for f in FAMILIES)


def _create_all(name: str, text: str) -> str:
    """`create table` for each of the topology's tables in `text`, with its comment (the kernel
    takes a table's comment only when it makes the table): the transaction fails, and changes
    nothing, if one exists already. Where none was observed, this spares the kernel dropping a
    table first, which waits out a grace period (~12 ms of a fresh apply)."""
    head = re.compile(rf'^table ({"|".join(FAMILIES)}) {re.escape(name)} {{\n(?:\s*(comment "[^"\n]*")\n)?', re.M)
    return "".join(f"create table {m[1]} {name} {{ {m[2] + '; ' if m[2] else ''}}}\n" for m in head.finditer(text))


def replace(ns: Namespace, new: Resource, old: Resource | None, saved: Path, refill: str = "") -> None:
    """Make the tables hold `new`, in one transaction: nobody ever sees a half-written ruleset.

    When only elements differ from what vnet wrote last (a forward added, a port's MAC), the
    transaction adds and deletes just those elements: one more forward on top of 10,000 costs what
    it costs on top of 10. Anything else replaces both tables whole."""
    script = None
    if old is not None and old.get("rendered") and old.get("text"):
        script = nftrules.delta(new.key, old.get("text"), new.get("text"))
    # `refill`: elements that live only on the host (DHCP snooping's leases), for tables made anew
    whole = new.get("text") + refill
    if script is not None:
        _transaction(ns, script)
    # none was observed: made without dropping one first; should one have come meanwhile, as before
    elif old is not None or not _transaction(ns, _create_all(new.key, whole) + whole, fail=False):
        _transaction(ns, _drop_all(new.key) + whole)
    _save(saved, new.get("text") if new.get("rendered") else None)


def delete(ns: Namespace, r: Resource, saved: Path) -> None:
    _transaction(ns, _drop_all(r.key))
    _save(saved, None)


def _save(saved: Path, text: str | None) -> None:
    if text is None:
        saved.unlink(missing_ok=True)
        return
    saved.parent.mkdir(parents=True, exist_ok=True)
    tmp = saved.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(saved)
