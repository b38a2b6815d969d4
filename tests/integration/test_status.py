"""`vnet status` against a real sandbox, through the `vnet` binary: one table per network with its
members (MAC, fixed or leased address, host-side veth/tap including hashed names), -o wide, JSON
checked against a schema, and honest states with their exit codes: not applied (3), in sync (0),
drift (1, with what differs and what apply would remove), stale DHCP leases after a subnet change
(1), and forwarding switches vnet has no record of (an empty --state-dir) said as such."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path

from vnet import check, names, spec

from .test_cli import ok

# --- a minimal JSON Schema checker (jsonschema is not a dependency): type (with null), enum,
# properties, required, additionalProperties (false or a schema), items, minimum -----------------

TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def validate(value, schema: dict, path: str = "$") -> list[str]:
    errors = []
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        good = any(isinstance(value, TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool)) for t in types)
        if not good:
            return [f"{path}: {value!r} is not of type {types}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not one of {schema['enum']}")
    if "minimum" in schema and isinstance(value, (int, float)) and value < schema["minimum"]:
        errors.append(f"{path}: {value} < {schema['minimum']}")
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                errors.append(f"{path}: {key!r} is required")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, v in value.items():
            if key in props:
                errors += validate(v, props[key], f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                errors += validate(v, extra, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errors += validate(v, schema["items"], f"{path}[{i}]")
    return errors


def obj(props: dict, required: tuple | None = None, extra=False) -> dict:
    return {"type": "object", "properties": props, "required": list(props if required is None else required), "additionalProperties": extra}


STR, INT, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
OPT_STR, OPT_INT = {"type": ["string", "null"]}, {"type": ["integer", "null"], "minimum": 0}
ADDRESS = {"type": ["object", "null"], "properties": {
    "address": STR, "source": {"enum": ["fixed", "lease"]}, "expires_at": OPT_INT, "remaining": OPT_INT, "in_subnet": BOOL,
}, "required": ["address", "source"], "additionalProperties": False}
MEMBER = obj({"name": STR, "kind": {"enum": ["netns", "tap", "vm"]}, "nic": OPT_INT, "mac": STR, "address": ADDRESS,
              "host_if": STR, "host_if_hashed": BOOL, "host_if_up": BOOL, "state": STR})
NETWORK = obj({
    "name": STR, "mode": {"enum": ["isolated", "host", "nat", "bridged"]}, "subnets": {"type": "array", "items": STR},
    "gateway": OPT_STR, "uplink": OPT_STR,
    "bridge": obj({"name": STR, "present": BOOL, "up": BOOL, "mac": OPT_STR, "mtu": OPT_INT, "state": STR}),
    "dhcp": {"type": ["object", "null"], "properties": {"range": {"type": "array", "items": STR}, "lease": STR}},
    "members": {"type": "array", "items": MEMBER}, "stale_leases": {"type": "integer", "minimum": 0},
    # an overlay network's vxlan device, and each other host with the FDB entries that send to it
    "overlay": {"type": ["object", "null"], "properties": {
        "device": STR, "present": BOOL, "up": BOOL, "vni": INT, "port": INT, "control": {"enum": ["static", "evpn"]}, "host": OPT_STR,
        "peers": {"type": "array", "items": obj({"host": STR, "address": STR, "fdb": {"type": "integer", "minimum": 0}, "flood": BOOL})},
    }, "required": ["device", "present", "up", "vni", "port", "control", "host", "peers"], "additionalProperties": False},
})
RESOURCE = obj({"kind": STR, "name": STR, "state": {"enum": ["ok", "unrecorded", "missing", "drift", "extra"]},
                "attrs": {"type": "object"}, "differs": {"type": "object", "additionalProperties": obj({"want": {}, "have": {}})},
                "note": OPT_STR})
LEASE = obj({"network": STR, "mac": STR, "address": STR, "name": OPT_STR, "expires_at": OPT_INT, "remaining": OPT_INT,
             "expired": BOOL, "in_subnet": BOOL, "subnet": OPT_STR})
SCHEMA = obj({
    "topology": STR, "netns": OPT_STR, "state": {"enum": ["not_applied", "in_sync", "drift", "stale_leases"]},
    "in_sync": BOOL, "applied_from": OPT_STR,
    "changes": obj({"create": {"type": "integer", "minimum": 0}, "update": {"type": "integer", "minimum": 0},
                    "delete": {"type": "integer", "minimum": 0}}),
    "notes": {"type": "array", "items": STR}, "recovered": OPT_STR,
    "networks": {"type": "array", "items": NETWORK},
    "interfaces": {"type": "object", "additionalProperties": obj(
        {"network": STR, "endpoint": STR, "vm": STR, "nic": OPT_INT, "kind": {"enum": ["tap", "veth"]}, "hashed": BOOL},
        required=("network", "nic", "kind", "hashed"))},
    "vms": {"type": "array", "items": {"type": "object"}},
    "resources": {"type": "array", "items": RESOURCE},
    "forwards": {"type": "array"},
    "leases": {"type": "array", "items": LEASE},
    "dhcp_clients": {"type": "array", "items": {"type": "object"}},  # what vnet's DHCP clients hold (`address: dhcp`)
    # overlay control: evpn: the BGP sessions of vnet's FRR
    "bgp": {"type": "array", "items": obj({"peer": STR, "state": STR, "received": INT, "sent": INT, "up": STR})},
})

TOPOLOGY = """\
name: {name}
networks:
  lan0:
    mode: nat
    subnet: {net}.0/24
    uplink: eth0
    dhcp: {{range: [{net}.100, {net}.150], lease: 1h}}
endpoints:
  c1: {{kind: netns, network: lan0, address: {net}.10/24}}
  c2: {{kind: netns, network: lan0}}
  longendpoint9: {{kind: tap, network: lan0}}
"""


def status(world, path: Path, code: int, *args: str, state: Path | None = None) -> subprocess.CompletedProcess:
    argv = ["status", str(path), *args]
    if state is not None:
        argv = ["--state-dir", str(state), *argv]
    return ok(world.vnet(*argv), code)


def status_json(world, path: Path, code: int, state: Path | None = None) -> dict:
    data = json.loads(status(world, path, code, "-o", "json", state=state).stdout)
    assert validate(data, SCHEMA) == [], validate(data, SCHEMA)
    return data


def host_links(world) -> list[str]:
    out = subprocess.run(["ip", "-n", world.host, "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [li["ifname"] for li in json.loads(out)]


def test_status_per_network_states_and_json(world, tmp_path):
    name = "st" + names._digest(str(tmp_path))[:5]
    world.applied.add(name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(TOPOLOGY.format(name=name, net="192.168.64"))
    topo = spec.load(path)
    long_tap = names.tap(name, "longendpoint9")
    assert long_tap != f"vt-{name}-longendpoint9"  # hashed: too long for IFNAMSIZ

    # never applied: said as such, exit 3, no advice to "repair"
    data = status_json(world, path, 3)
    assert data["state"] == "not_applied" and not data["in_sync"]
    assert data["changes"]["delete"] == 0 and data["changes"]["create"] > 5
    text = status(world, path, 3).stdout
    assert "not applied" in text and "repair" not in text and "missing:" not in text

    ok(world.vnet("apply", str(path)))
    leased = ipaddress.IPv4Interface(check.dhcp_client(f"{name}-c2"))
    t_lease = time.time()

    data = status_json(world, path, 0)
    assert data["state"] == "in_sync" and data["in_sync"] and data["applied_from"] == str(path.resolve())
    [net] = data["networks"]
    assert (net["mode"], net["subnets"], net["gateway"], net["uplink"]) == ("nat", ["192.168.64.0/24"], "192.168.64.1", "eth0")
    assert net["bridge"]["name"] == names.bridge(name, "lan0") and net["bridge"]["up"] and net["bridge"]["state"] == "ok"
    members = {m["name"]: m for m in net["members"]}
    assert members["c1"]["address"] == {"address": "192.168.64.10", "source": "fixed"}
    assert members["c1"]["mac"] == topo.endpoints["c1"].mac or members["c1"]["mac"].startswith("52:54:00:")
    lease = members["c2"]["address"]
    assert lease["source"] == "lease" and lease["address"] == str(leased.ip) and lease["in_subnet"]
    assert abs(lease["expires_at"] - (t_lease + 3600)) < 30 and 3500 < lease["remaining"] <= 3600
    assert members["longendpoint9"]["host_if"] == long_tap and members["longendpoint9"]["host_if_hashed"]
    assert all(m["state"] == "ok" for m in members.values()), members
    # every tap and veth vnet made maps back to its endpoint
    made = [li for li in host_links(world) if li.startswith(("vt", "ve")) and li != names.bridge(name, "lan0")]
    assert sorted(made) == sorted(data["interfaces"]) and len(made) == 3
    assert data["interfaces"][long_tap] == {"network": "lan0", "endpoint": "longendpoint9", "nic": None, "kind": "tap", "hashed": True}
    assert data["interfaces"][names.veth_host(name, "c2")]["endpoint"] == "c2"
    [lj] = data["leases"]
    assert isinstance(lj["expires_at"], int) and isinstance(lj["remaining"], int) and lj["in_subnet"]

    text = status(world, path, 0).stdout
    assert f"network lan0: nat, 192.168.64.0/24, gateway 192.168.64.1, uplink eth0, bridge {names.bridge(name, 'lan0')} (up)" in text
    assert "192.168.64.10 (fixed)" in text and f"{leased.ip} (lease, " in text and f"{long_tap} (hashed)" in text
    assert text.rstrip().splitlines()[-1] == f"{name} in netns {world.host}: in sync"
    wide = status(world, path, 0, "-o", "wide").stdout
    assert f"mark=vnet:{name}:tap:longendpoint9" in wide and "peer_ns=" in wide
    assert "ruleset" in wide and "sysctl" in wide

    # drift: an address removed by hand is named with what apply would do, exit 1
    subprocess.run(["ip", "-n", world.host, "addr", "del", "192.168.64.1/24", "dev", names.bridge(name, "lan0")], check=True)
    data = status_json(world, path, 1)
    assert data["state"] == "drift" and data["changes"] == {"create": 1, "update": 0, "delete": 0}
    assert [(r["kind"], r["state"]) for r in data["resources"] if r["state"] != "ok"] == [("bridge_address", "missing")]
    text = status(world, path, 1).stdout
    assert "missing: bridge_address" in text and "`vnet apply` would create 1 (missing)" in text
    ok(world.vnet("apply", str(path)))
    status(world, path, 0)

    # a file holding only `name:` would remove everything: said as such, never as a repair
    bare = tmp_path / "bare.yaml"
    bare.write_text(f"name: {name}\n")
    data = status_json(world, bare, 1)
    owned = len(data["resources"])
    assert data["state"] == "drift" and data["changes"]["delete"] == owned > 10
    assert all(r["state"] == "extra" for r in data["resources"])
    text = status(world, bare, 1).stdout
    assert f"would REMOVE ALL {owned}" in text and "vnet destroy" in text and str(path.resolve()) in text
    assert "repair" not in text and "stale" not in text  # c2's lease is of a network the file no longer has

    # an empty --state-dir: the forwarding switches are at 1, only vnet's record of them is missing
    empty = tmp_path / "empty-state"
    data = status_json(world, path, 1, state=empty)
    sysctls = [r for r in data["resources"] if r["kind"] == "sysctl"]
    assert sysctls and {r["state"] for r in sysctls} == {"unrecorded"}, sysctls
    text = status(world, path, 1, state=empty).stdout
    assert "no record of the value before" in text
    assert not any(line.startswith("missing: sysctl") for line in text.splitlines())

    # a subnet change while a DHCP client holds a lease: not plain "in sync"
    path.write_text(TOPOLOGY.format(name=name, net="192.168.65"))
    ok(world.vnet("apply", str(path)))
    data = status_json(world, path, 1)
    assert data["state"] == "stale_leases" and not data["in_sync"], data["notes"]
    assert data["networks"][0]["stale_leases"] == 1
    assert [x["address"] for x in data["leases"] if not x["in_subnet"]] == [str(leased.ip)]
    text = status(world, path, 1).stdout
    assert "stale leases" in text and "outside the subnet of lan0" in text
    assert not text.rstrip().splitlines()[-1].endswith(": in sync")
