"""Load a topology file and check it; every problem is reported with its path and a fix.

Two stages: `load()` parses YAML and checks the model and the relations between fields (pure, no
host access except user/group look-ups); `check_against_host()` checks what depends on the host
the topology is applied to (uplinks exist, subnets do not collide with host routes).
"""

from __future__ import annotations

import grp
import ipaddress
import pwd
import os
import re
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

from vnet import names
from vnet.errors import Problem, SpecError
from vnet.spec import vmfiles
from vnet.spec.schema import Model, ValidationError
from vnet.spec.models import MacvlanSpec, NetnsSpec, TapSpec, Topology, TunSpec, iface4, iface6, port_span
from vnet.values import per_topology

if TYPE_CHECKING:
    from pathlib import Path


def parse_yaml(text: str) -> Any:
    """The file's plain data (spec/yamlfile.py, imported only when a file is parsed)."""
    from vnet.spec.yamlfile import parse_yaml as parse

    return parse(text)


# --- schema problems, said in the file's terms ---------------------------------------------------
#
# The model layer (schema.py) reports each error as {type, loc, msg, input, ctx}; its locations
# carry labels of its own (the endpoint's kind, union members such as `str`/`int`). Each error is
# restated here: its location walked against the data the user wrote (so only keys and indexes
# that exist in the file remain), its message by error type, and a fix with a "did you mean" where
# a close spelling exists.


def _yaml_type(value: object) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "a " + type(value).__name__


def _user_path(data: Any, loc: tuple, keep_last: bool) -> tuple[tuple, list]:
    """The parts of `loc` that are keys or indexes of `data` (plus the last one of a missing
    key), and the labels the model layer added (union members, the endpoint's kind)."""
    parts: list = []
    labels: list = []
    cur = data
    for i, part in enumerate(loc):
        if isinstance(cur, dict) and part in cur:
            parts.append(part)
            cur = cur[part]
        elif isinstance(cur, (list, tuple)) and isinstance(part, int) and 0 <= part < len(cur):
            parts.append(part)
            cur = cur[part]
        elif i == len(loc) - 1 and keep_last and part != "[key]":
            parts.append(part)
            cur = None
        else:
            labels.append(part)
    return tuple(parts), labels


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Model)


def _kind_model(tp: Any, value: Any) -> Any:
    """The member of a tagged union (the endpoint kinds) that `value` names by its `kind`."""
    for member in get_args(tp):
        if _is_model(member) and "kind" in member.model_fields:
            if isinstance(value, dict) and value.get("kind") in get_args(member.model_fields["kind"].annotation):
                return member
    return None


def _field(model: type[Model], key: Any):  # type: ignore[no-untyped-def]
    for name, info in model.model_fields.items():
        if (info.alias or name) == key:
            return info
    return None


def _type_at(data: Any, parts: tuple) -> Any:
    """The model class (or type) the value at `parts` of the file is checked against."""
    tp: Any = Topology
    cur = data
    for part in parts:
        tp = _unwrap(tp)
        if get_origin(tp) in (Union, UnionType):
            tp = _kind_model(tp, cur)
        if _is_model(tp):
            info = _field(tp, part)
            if info is None:
                return None
            tp = info.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        elif get_origin(tp) in (list, tuple):
            tp = get_args(tp)[0]
        else:
            return None
        cur = cur.get(part) if isinstance(cur, dict) else (cur[part] if isinstance(cur, (list, tuple)) and isinstance(part, int) and part < len(cur) else None)
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, UnionType):
        tp = _kind_model(tp, cur) or tp
    return tp


def _keys(model: type[Model]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _kinds(model: type[Model]) -> dict[str, type[Model]]:
    """tap/tun/netns → model, for the kinds of endpoint `model` is one of."""
    from vnet.spec.models import Endpoint

    members = get_args(_unwrap(Endpoint))
    if model not in members:
        return {}
    return {get_args(m.model_fields["kind"].annotation)[0]: m for m in members}


def _said_as(words: list[str], conjunction: str = "or") -> str:
    words = [str(w) for w in words]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" {conjunction} " + words[-1]


def _did_you_mean(word: object, choices: list[str]) -> str:
    import difflib  # only a file with problems needs it

    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


def _unknown_key(data: Any, parts: tuple) -> Problem:
    path, key = _dotted(parts), parts[-1]
    model = _type_at(data, parts[:-1])
    if not _is_model(model):
        return Problem(path, "unknown key", "remove it, or check its spelling")
    kinds = _kinds(model)
    takers = [kind for kind, m in kinds.items() if m is not model and key in _keys(m)]
    if takers:
        mine = next(kind for kind, m in kinds.items() if m is model)
        return Problem(path, f"a {mine} endpoint takes no `{key}:`; {_said_as(takers, 'and')} endpoints do", f"remove it, or use kind: {_said_as(takers)}")
    hint = _did_you_mean(key, _keys(model))
    if not hint:  # a key of a sub-section written one level too high (dhcp's `range:` on the network)
        for name, info in model.model_fields.items():
            sub = _unwrap(info.annotation)
            if _is_model(sub) and key in _keys(sub):
                hint = f"`{key}` goes under `{info.alias or name}:`"
                break
    if not hint:
        hint = f"{_said_as(sorted(_keys(model)))} are the keys here" if len(_keys(model)) <= 12 else "remove it, or check its spelling"
    return Problem(path, "unknown key", hint)


def _dotted(parts: tuple | list) -> str:
    return ".".join(str(p) for p in parts)


def _quoted_list(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _schema_problem(data: Any, err: dict) -> Problem:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    parts, labels = _user_path(data, err["loc"], keep_last=kind == "missing")
    path = _dotted(parts)
    if kind == "extra_forbidden":
        return _unknown_key(data, parts)
    if kind == "missing":
        tp = _type_at(data, parts)
        if get_origin(tp) is Literal:
            return Problem(path, "is required", f"add it: one of {_said_as(list(get_args(tp)))}")
        return Problem(path, "is required", "add it")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        kinds = _quoted_list(ctx.get("expected_tags", "")) or ["tap", "tun", "netns"]
        if kind == "union_tag_not_found":
            return Problem(f"{path}.kind", "is required", f"add kind: {_said_as(kinds)}")
        hint = _did_you_mean(ctx.get("tag"), kinds)
        return Problem(f"{path}.kind", f"{ctx.get('tag')!r} is not a kind", (hint + " " if hint else "") + f"use kind: {_said_as(kinds)}")
    if kind == "literal_error":
        choices = _quoted_list(ctx.get("expected", ""))
        hint = _did_you_mean(value, choices)
        return Problem(path, f"{value!r} is not one of {_said_as(choices)}", hint or "use one of them")
    if labels and labels[-1] in ("str", "int"):  # a `str | int` field: a name or a number
        return Problem(path, f"is {_yaml_type(value)}", "write a name or a number")
    if kind in ("int_type", "int_parsing", "int_from_float", "finite_number"):
        return Problem(path, f"{value!r} is not a whole number", "write a number like 1500")
    if kind == "int_parsing_size":
        return Problem(path, "is too large a number", "write a number that fits its field")
    if kind in ("bool_type", "bool_parsing"):
        return Problem(path, f"{value!r} is not true or false", "write true or false")
    if kind == "string_type":
        return Problem(path, f"is {_yaml_type(value)}", "write text here")
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return Problem(path, f"is {_yaml_type(value)}", "write a mapping here (key: value lines)")
    if kind in ("list_type", "tuple_type"):
        return Problem(path, f"is {_yaml_type(value)}", "write a list here ([a, b] or - lines)")
    if kind in ("too_short", "too_long"):
        return Problem(path, f"has {ctx.get('actual_length')} items", f"write {ctx.get('min_length', ctx.get('max_length'))} items" if kind == "too_short" else f"write at most {ctx.get('max_length')} items")
    if kind in ("greater_than_equal", "greater_than"):
        return Problem(path, f"{value!r} is too small", f"the least is {ctx.get('ge', ctx.get('gt'))}")
    if kind in ("less_than_equal", "less_than"):
        return Problem(path, f"{value!r} is too large", f"the most is {ctx.get('le', ctx.get('lt'))}")
    if kind == "value_error":
        return Problem(path, err["msg"])
    return Problem(path, f"{value!r} is not valid here ({err['msg']})")


def _model_problems(data: Any, exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors():
        problem = _schema_problem(data, err)
        if problem.path in (p.path for p in problems):
            continue  # one problem per place (union members each report the same value)
        problems.append(problem)
    return problems


# --- everything else checked too, around the schema problems --------------------------------------
#
# A schema problem must not hide the rest of the file (a too-long bridge name and an overlapping
# subnet are two problems). The file is checked again without what is broken, and the relations
# between fields checked on what remains. A broken field whose absence only means its default (a
# derived name, a derived MAC, no rate limit) is left out and its entry still checked; a broken
# field that other checks rely on (a mode, a subnet, an address, a network reference) leaves its
# whole entry out, and nothing that refers to that entry is reported.

_OPTIONAL = {
    "networks": {"bridge", "mtu", "uplink", "forwards", ("dhcp", "lease"), ("dhcp", "mtu"), ("dhcp", "routes"),
                 ("dhcp", "range"), ("dhcp", "hosts"), "dns"},
    "endpoints": {"ifname", "mac", "owner", "group", "isolated", "spoofing", "rate", "netns"},
    "vms": {"image", "kernel", "initrd", "append", "disk", "memory", "cpus", "accel", "nics"},
}
_PLACEHOLDER_NAME = "x"


def _salvage(data: dict, errors: list[dict], dropped: set[tuple], broken: set[str]) -> dict:
    """A copy of `data` without the parts `errors` point at (recorded in `dropped`; names of
    whole entries left out also in `broken`)."""
    import copy  # only a file with problems needs it

    data = copy.deepcopy(data)
    for err in errors:
        parts, _ = _user_path(data, err["loc"], keep_last=False)
        if not parts:
            continue
        if err["type"] == "extra_forbidden" and len(parts) > 1:  # an unknown key means nothing: only it goes
            holder = data
            for key in parts[:-1]:
                holder = holder[key] if isinstance(holder, (dict, list)) else None
            if isinstance(holder, dict):
                holder.pop(parts[-1], None)
                dropped.add(parts)
                continue
        top = parts[0]
        if top == "name":
            data["name"] = _PLACEHOLDER_NAME
            dropped.add(("name",))
        elif top in _OPTIONAL and len(parts) >= 2 and isinstance(data.get(top), dict):
            section, entry = data[top], parts[1]
            if len(parts) >= 3 and isinstance(section.get(entry), dict):
                for depth in (2, 1):  # the deepest optional part: dhcp.lease before dhcp
                    sub = tuple(parts[2 : 2 + depth])
                    if len(sub) == depth and (sub[0] if depth == 1 else sub) in _OPTIONAL[top]:
                        holder = section[entry]
                        for key in sub[:-1]:
                            holder = holder.get(key) if isinstance(holder, dict) else None
                        if isinstance(holder, dict):
                            holder.pop(sub[-1], None)
                        dropped.add((top, entry, *sub))
                        break
                else:
                    section.pop(entry, None)
                    dropped.add((top, entry))
                    broken.add(str(entry))
            else:
                section.pop(entry, None)
                dropped.add((top, entry))
                broken.add(str(entry))
        else:  # a whole section (allow rules shift when one is left out), or an unknown key
            data.pop(top, None)
            dropped.add((top,))
    return data


def _hidden(problem: Problem, dropped: set[tuple]) -> bool:
    """A relation problem about something left out of the check (or resting on it)."""
    path = problem.path
    for parts in dropped:
        if parts == ("name",):
            continue
        d = _dotted(parts)
        if path == d or path.startswith(d + ".") or d.startswith(path + "."):
            return True
        if len(parts) == 2 and re.search(re.escape(d) + r"(?![\w-])", problem.message):
            return True
    return False


def load_text(text: str, base: Path | None = None) -> Topology:
    """The topology in `text`; a VM's relative paths are taken from `base` (the file's directory)."""
    return _topology(parse_yaml(text), base)


def _topology(data: Any, base: Path | str | None) -> Topology:
    if data is None:
        raise SpecError([Problem("", "the file is empty", "declare at least `name:`")])
    if not isinstance(data, dict):
        raise SpecError([Problem("", "the top level must be a mapping", "start with `name: <topology>`")])
    try:
        return _checked(data, base)
    except RecursionError:
        raise SpecError([Problem("", "nesting is too deep", "a topology is a few levels deep")]) from None


def _checked(data: dict, base: Path | None = None) -> Topology:
    try:
        topo = Topology.model_validate(data)
    except ValidationError as exc:
        problems = _model_problems(data, exc)
        problems += _relations_around(data, exc.errors())
        raise SpecError(problems) from None
    topo = vmfiles.resolve(topo, base)
    problems = relations(topo)
    if problems:
        raise SpecError(problems)
    return topo


def _relations_around(data: dict, errors: list[dict]) -> list[Problem]:
    dropped: set[tuple] = set()
    broken: set[str] = set()
    partial = data
    for _ in range(4):  # each round leaves out more; a few rounds reach a file that validates
        partial = _salvage(partial, errors, dropped, broken)
        try:
            topo = Topology.model_validate(partial)
            break
        except ValidationError as exc:
            errors = exc.errors()
    else:
        return []
    return [p for p in relations(topo, frozenset(broken)) if not _hidden(p, dropped)]


def load(path: str | Path, keep: Path | None = None) -> Topology:
    """The topology in the file at `path`. With `keep`, a target's state root, the file's data as
    parsed is kept there and taken back while the file's text is unchanged (parsed.py)."""
    p = _as_pathlib_writes(os.fspath(path))
    try:
        with open(p) as f:  # what Path(path).read_text() reads, without importing pathlib (~3 ms of `vnet validate`)
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([Problem(p, f"cannot read the file ({exc.__class__.__name__}: {exc})", "check the path")]) from None
    where = os.path.abspath(p)
    if keep is None:
        topo = _topology(parse_yaml(text), base=os.path.dirname(where))
    else:
        from vnet.spec import parsed

        data = parsed.read(keep, where, text)
        fresh = data is parsed.MISSING
        if fresh:
            data = parse_yaml(text)
        topo = _topology(data, base=os.path.dirname(where))
        if fresh:
            parsed.keep(keep, where, text, data)  # only what passed the checks
    problems = vmfiles.check(topo)  # the files VMs boot from, as QEMU's user will open them
    if problems:
        raise SpecError(problems)
    return topo


def _as_pathlib_writes(path: str) -> str:
    """str(Path(path)): empty and `.` parts and a trailing slash dropped, one slash between parts
    (a leading `//` kept, as POSIX asks), `.` for nothing."""
    root = "//" if path.startswith("//") and not path.startswith("///") else "/" if path.startswith("/") else ""
    return root + "/".join(part for part in path.split("/") if part not in ("", ".")) or "."


# --- relations between fields -------------------------------------------------------------------


class NetworkAddressing(NamedTuple):
    subnet: ipaddress.IPv4Network | None
    gateway: ipaddress.IPv4Address | None  # the bridge's address (host, nat)
    service: ipaddress.IPv4Address | None  # where DHCP/DNS answer: the gateway, or an isolated network's service namespace


@per_topology
def addressing(topo: Topology, net_name: str) -> NetworkAddressing:
    net = topo.networks[net_name]
    subnet = ipaddress.IPv4Network(net.subnet) if net.subnet else None
    gateway = service = None
    if net.mode in ("host", "nat") and subnet is not None:
        gateway = service = ipaddress.IPv4Address(net.address) if net.address else next(subnet.hosts())
        if net.overlay is not None and (net.dhcp or net.dns):
            # every host carries the gateway address (anycast): DHCP/DNS answer from one of their own
            service = overlay_service(subnet, gateway)
    elif net.mode == "isolated" and subnet is not None and (net.dhcp or net.dns or net.subnet6):
        service = next(subnet.hosts())
    return NetworkAddressing(subnet, gateway, service)


class NetworkAddressing6(NamedTuple):
    subnet: ipaddress.IPv6Network | None
    gateway: ipaddress.IPv6Address | None  # the bridge's IPv6 address (host, nat)
    service: ipaddress.IPv6Address | None  # where router advertisements, DHCPv6 and DNS come from


@per_topology
def addressing6(topo: Topology, net_name: str) -> NetworkAddressing6:
    """A network's IPv6 side: the gateway takes ::1 of subnet6 (or address6); an isolated
    network's service namespace takes ::1 and advertises no default route."""
    net = topo.networks[net_name]
    if not net.subnet6 or net.mode == "bridged":
        return NetworkAddressing6(None, None, None)
    subnet = ipaddress.IPv6Network(net.subnet6)
    if net.mode in ("host", "nat"):
        gateway = ipaddress.IPv6Address(net.address6) if net.address6 else subnet[1]
        return NetworkAddressing6(subnet, gateway, gateway)
    return NetworkAddressing6(subnet, None, subnet[1])


@per_topology
def dhcp6_range(topo: Topology, net_name: str) -> tuple[ipaddress.IPv6Address, ipaddress.IPv6Address] | None:
    """The DHCPv6 range of a network that hands out addresses by DHCPv6 (None: SLAAC)."""
    net = topo.networks[net_name]
    addr = addressing6(topo, net_name)
    if addr.subnet is None or net.dhcp6 is False:
        return None
    if isinstance(net.dhcp6, tuple):
        return ipaddress.IPv6Address(net.dhcp6[0]), ipaddress.IPv6Address(net.dhcp6[1])
    n = addr.subnet.num_addresses
    return (addr.subnet[0x100] if n > 0x200 else addr.subnet[2]), addr.subnet[min(n - 1, 0xFFFF)]


def wants_service(topo: Topology, net_name: str) -> bool:
    """The network runs vnet's dnsmasq: DHCP, DNS, or IPv6 router advertisements."""
    net = topo.networks[net_name]
    return net.mode != "bridged" and (net.dhcp is not None or net.dns is not None or bool(net.subnet6))


def overlay_service(subnet: ipaddress.IPv4Network, gateway: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
    """The address DHCP/DNS answer from on an overlay network: the one after the gateway (before
    it, when the gateway is the subnet's last host address)."""
    after = gateway + 1
    return after if after < subnet.broadcast_address else gateway - 1


def dhcp_range(topo: Topology, net_name: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The declared range, or the subnet's hosts above the service address."""
    net, addr = topo.networks[net_name], addressing(topo, net_name)
    assert net.dhcp is not None and addr.subnet is not None
    if net.dhcp.range:
        return ipaddress.IPv4Address(net.dhcp.range[0]), ipaddress.IPv4Address(net.dhcp.range[1])
    first, last = addr.subnet.network_address + 1, addr.subnet.broadcast_address - 1
    taken = sorted({a for a in (addr.gateway, addr.service) if a is not None and first <= a <= last})
    if taken:
        # one contiguous range: the largest run between the network's own addresses (the later on a tie)
        runs, start = [], first
        for a in taken:
            runs.append((start, a - 1))
            start = a + 1
        runs.append((start, last))
        first, last = max(reversed(runs), key=lambda r: int(r[1]) - int(r[0]))
    return first, last


def principal_id(value: object, kind: str) -> int | None:
    """The uid (kind "user") or gid ("group") a topology names by number or by name; None for
    none. KeyError when this host has no such name."""
    if value is None:
        return None
    text = str(value)
    if text.isdigit():
        return int(text)
    return pwd.getpwnam(text).pw_uid if kind == "user" else grp.getgrnam(text).gr_gid


def _principal_exists(value: str, kind: str) -> bool:
    try:
        principal_id(value, kind)
        return True
    except KeyError:
        return False


def relations(topo: Topology, broken: frozenset[str] = frozenset()) -> list[Problem]:
    """Problems between fields. `broken` names entries left out for their own (schema) problems:
    a reference to one of them is not reported as a reference to nothing."""
    problems: list[Problem] = []
    add = problems.append
    seen_ifnames: dict[str, str] = {}

    def claim_ifname(name: str, path: str) -> None:
        if name in seen_ifnames:
            add(Problem(path, f"interface name {name!r} is also used by {seen_ifnames[name]}", "choose another name"))
        else:
            seen_ifnames[name] = path

    for net_name, net in topo.networks.items():
        path = f"networks.{net_name}"
        claim_ifname(net.bridge or names.bridge(topo.name, net_name), f"{path}.bridge")
        if net.mode in ("host", "nat") and not net.subnet:
            add(Problem(f"{path}.subnet", f"is required in {net.mode} mode", "add e.g. subnet: 192.168.50.0/24"))
        if net.mode in ("isolated", "bridged") and net.address:
            add(Problem(f"{path}.address", f"the bridge has no address in {net.mode} mode", "remove it, or use mode: host"))
        if net.mode == "bridged" and not net.uplink:
            add(Problem(f"{path}.uplink", "is required in bridged mode", "name the NIC that joins the bridge, e.g. uplink: eth0"))
        if net.mode in ("isolated", "host") and net.uplink:
            add(Problem(f"{path}.uplink", f"has no meaning in {net.mode} mode", "remove it, or use mode: nat or bridged"))
        if net.mode != "nat" and net.offload is not None:
            add(Problem(f"{path}.offload", f"has no meaning in {net.mode} mode (nothing is routed out of it)", "remove it, or use mode: nat"))
        if net.subnet:
            subnet = ipaddress.IPv4Network(net.subnet)
            if net.address:
                gw = ipaddress.IPv4Address(net.address)
                if gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
                    add(Problem(f"{path}.address", f"{gw} is not a host address of {subnet}", "pick an address inside the subnet"))

    uplinks: dict[str, str] = {}
    for net_name, net in topo.networks.items():
        if net.mode == "bridged" and net.uplink:
            if net.uplink in uplinks:
                add(Problem(f"networks.{net_name}.uplink", f"{net.uplink} already joins networks.{uplinks[net.uplink]}", "a NIC can join one bridge"))
            uplinks[net.uplink] = net_name

    macs: dict[str, str] = {}
    addresses: dict[ipaddress.IPv4Address, str] = {}
    for ep_name, ep in topo.endpoints.items():
        path = f"endpoints.{ep_name}"
        network = getattr(ep, "network", None)
        if network in broken:
            network = None
        elif network is not None and network not in topo.networks:
            known = ", ".join(topo.networks) or "none declared"
            add(Problem(f"{path}.network", f"no network named {network!r} (known: {known})", "declare it under networks:"))
            network = None
        if isinstance(ep, (TapSpec, TunSpec)):
            claim_ifname(names.endpoint_tap(topo.name, ep_name, ep.ifname), f"{path}.ifname")
        elif isinstance(ep, NetnsSpec):
            claim_ifname(names.endpoint_veth(topo.name, ep_name, ep.host_ifname), f"{path}.host_ifname" if ep.host_ifname else path)
        mac = getattr(ep, "mac", None)
        if mac:
            if mac in macs:
                add(Problem(f"{path}.mac", f"{mac} is also the MAC of endpoints.{macs[mac]}", "MACs must be unique; omit it to get a stable unique one"))
            macs[mac] = ep_name
        for field in ("owner", "group"):
            value = getattr(ep, field, None)
            if value is not None and not _principal_exists(str(value), "user" if field == "owner" else "group"):
                add(Problem(f"{path}.{field}", f"no {'user' if field == 'owner' else 'group'} {value!r} on this host", "create it, or use a number"))
        address = getattr(ep, "address", None)
        if address:
            iface = iface4(address)
            ip = iface.ip  # read once: the property makes a new address object at each reading
            if ip in addresses:
                add(Problem(f"{path}.address", f"{ip} is also the address of {addresses[ip]}", "give each endpoint its own address"))
            addresses[ip] = path
        if address and network:
            net = topo.networks[network]
            addr = addressing(topo, network)
            if net.mode == "bridged":
                pass  # the LAN's addressing is not declared; any address may be right
            elif addr.subnet is None:
                add(Problem(f"{path}.address", f"networks.{network} has no subnet", f"add subnet: {iface.network} to networks.{network}"))
            elif iface.network != addr.subnet:
                add(Problem(f"{path}.address", f"{iface} is not inside networks.{network}.subnet {addr.subnet}", f"use an address in {addr.subnet} with /{addr.subnet.prefixlen}"))
            elif ip in (addr.subnet.network_address, addr.subnet.broadcast_address):
                add(Problem(f"{path}.address", f"{ip} is the network or broadcast address", "pick a host address"))
            elif addr.gateway is not None and ip == addr.gateway:
                add(Problem(f"{path}.address", f"{ip} is the gateway (bridge) address", "pick another host address"))
            elif addr.service is not None and ip == addr.service:
                add(Problem(f"{path}.address", f"{ip} is the address of the network's DHCP/DNS service", "pick another host address"))
    for net_name, net in topo.networks.items():
        if net.address:
            gw = ipaddress.IPv4Address(net.address)
            if gw in addresses:
                add(Problem(f"networks.{net_name}.address", f"{gw} is also the address of {addresses[gw]}", "pick another address"))
    netns_names: dict[str, str] = {}
    for ep_name, ep in topo.endpoints.items():
        if isinstance(ep, NetnsSpec):
            if ep.own_netns and not ep.netns:
                add(Problem(f"endpoints.{ep_name}.own_netns", "says the namespace is vnet's but names none", "add netns: <name>, or omit own_netns (vnet then makes its own)"))
            ns = names.endpoint_netns(topo.name, ep_name, ep.netns)
            if ns in netns_names:
                add(Problem(f"endpoints.{ep_name}.netns", f"namespace {ns!r} is also used by endpoints.{netns_names[ns]}", "one endpoint per namespace"))
            netns_names[ns] = ep_name
    _overlaps(topo, add)
    _services(topo, add)
    _vms(topo, add, claim_ifname, macs, addresses, broken)
    _forwards(topo, add, broken)
    _allows(topo, add, broken)
    _names(topo, add)
    _endpoint_conveniences(topo, add)
    _ipv6(topo, add)
    _hosts(topo, add)
    return problems


def _endpoint_conveniences(topo: Topology, add) -> None:
    """DHCP clients vnet runs, and macvlan endpoints on host NICs."""
    spaces = {names.endpoint_netns(topo.name, n, ep.netns): n for n, ep in topo.endpoints.items() if isinstance(ep, NetnsSpec)}
    bridged = {net.uplink: n for n, net in topo.networks.items() if net.mode == "bridged" and net.uplink}
    for ep_name, ep in topo.endpoints.items():
        path = f"endpoints.{ep_name}"
        if isinstance(ep, NetnsSpec) and ep.dhcp:
            if ep.address:
                add(Problem(f"{path}.address", "a static address and a DHCP client on one interface", "keep `address: dhcp` or the address"))
            net = topo.networks.get(ep.network)
            if net is not None and net.mode != "bridged" and net.dhcp is None:
                add(Problem(f"{path}.address", f"networks.{ep.network} serves no DHCP for the client to ask",
                            f"add dhcp: true to networks.{ep.network}, or give a static address"))
        if isinstance(ep, MacvlanSpec):
            if ep.dhcp and ep.address:
                add(Problem(f"{path}.address", "a static address and a DHCP client on one interface", "keep `address: dhcp` or the address"))
            if ep.gateway and not ep.address:
                add(Problem(f"{path}.gateway", "needs a static address to be reached through", "add address: with a prefix, or remove gateway:"))
            elif ep.gateway and ipaddress.IPv4Address(ep.gateway) not in iface4(ep.address).network:
                add(Problem(f"{path}.gateway", f"{ep.gateway} is not inside {iface4(ep.address).network}", "pick a gateway on the address's subnet"))
            if ep.uplink in bridged:
                add(Problem(f"{path}.uplink", f"{ep.uplink} is a port of networks.{bridged[ep.uplink]}'s bridge and takes no macvlan",
                            f"put the endpoint on networks.{bridged[ep.uplink]} as kind: netns instead"))
            ns = names.endpoint_netns(topo.name, ep_name, ep.netns)
            if ns in spaces:
                add(Problem(f"{path}.netns", f"namespace {ns!r} is also used by endpoints.{spaces[ns]}", "one endpoint per namespace"))
            spaces[ns] = ep_name


def overlapping(ranges: list[ipaddress.IPv4Network]) -> dict[int, list[int]]:
    """For each range (by index), the earlier ranges (by index) it overlaps; only those with any.

    Sorted sweep, O(n log n): CIDR blocks either nest or are apart, so after sorting by start
    (wider first) a block overlaps exactly the blocks still open on a stack of its ancestors;
    that stack is at most 33 deep (one per prefix length), equal blocks share one entry."""
    order = sorted(range(len(ranges)), key=lambda i: (int(ranges[i].network_address), ranges[i].prefixlen, i))
    stack: list[tuple[int, int, list[int]]] = []  # (end, prefixlen, indexes of an equal block)
    pairs: dict[int, list[int]] = {}
    for i in order:
        net = ranges[i]
        start, end = int(net.network_address), int(net.broadcast_address)
        while stack and stack[-1][0] < start:
            stack.pop()
        if stack and stack[-1][0] == end and stack[-1][1] == net.prefixlen:
            same = stack[-1][2]
            for j in (j for _, _, group in stack for j in group):
                a, b = (i, j) if j < i else (j, i)
                pairs.setdefault(a, []).append(b)
            same.append(i)
            continue
        for _, _, group in stack:
            for j in group:
                a, b = (i, j) if j < i else (j, i)
                pairs.setdefault(a, []).append(b)
        stack.append((end, net.prefixlen, [i]))
    return {i: sorted(js) for i, js in pairs.items()}


def _overlaps(topo: Topology, add) -> None:
    """Subnets must not overlap each other, nor a tun's network (two tuns may share one)."""
    where: list[tuple[str, str, bool]] = []  # (path, how others name it, is a tun)
    ranges: list[ipaddress.IPv4Network] = []
    for net_name, net in topo.networks.items():
        if net.subnet:
            ranges.append(ipaddress.IPv4Network(net.subnet))
            where.append((f"networks.{net_name}.subnet", f"networks.{net_name}.subnet", False))
    for ep_name, ep in topo.endpoints.items():
        if isinstance(ep, TunSpec) and ep.address:
            ranges.append(iface4(ep.address).network)
            where.append((f"endpoints.{ep_name}.address", f"endpoints.{ep_name}.address", True))
    for i, earlier in sorted(overlapping(ranges).items()):
        others = [j for j in earlier if not (where[i][2] and where[j][2])]
        if not others:
            continue
        named = [f"{where[j][1]} {ranges[j]}" for j in others[:3]]
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        add(Problem(where[i][0], f"{ranges[i]} overlaps {', '.join(named)}{more}", "use a separate range"))


def _hosts(topo: Topology, add) -> None:
    """`hosts:`, `host:` of endpoints and VMs, and `overlay:` of networks."""
    seen: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
    for h, a in topo.hosts.items():
        ip = ipaddress.ip_address(a)
        if ip in seen:
            add(Problem(f"hosts.{h}", f"{a} is also the address of hosts.{seen[ip]}", "give each host its own underlay address"))
        seen.setdefault(ip, h)
    known = ", ".join(topo.hosts)
    placed = [(f"endpoints.{n}", ep.host) for n, ep in topo.endpoints.items()] + [(f"vms.{n}", vm.host) for n, vm in topo.vms.items()]
    for path, host in placed:
        if topo.hosts and host is None:
            add(Problem(f"{path}.host", "is required when the topology declares hosts:", f"add host: with one of {known}"))
        elif host is not None and not topo.hosts:
            add(Problem(f"{path}.host", "names a host, but the topology declares no hosts:", "add hosts: (name → underlay address), or remove host:"))
        elif host is not None and host not in topo.hosts:
            add(Problem(f"{path}.host", f"no host named {host!r} (known: {known})", "name one of hosts:"))
    if topo.evpn is not None and not any(net.overlay and net.overlay.control == "evpn" for net in topo.networks.values()):
        add(Problem("evpn", "is set, but no network has overlay: {control: evpn}", "remove evpn:, or set control: evpn on an overlay network"))
    if topo.evpn is not None:
        seen_rr: set[str] = set()
        for i, rr in enumerate(topo.evpn.route_reflectors):
            if rr not in topo.hosts:
                add(Problem(f"evpn.route_reflectors[{i}]", f"no host named {rr!r} (known: {known or 'none'})", "name hosts of hosts:"))
            elif rr in seen_rr:
                add(Problem(f"evpn.route_reflectors[{i}]", f"{rr} is named twice", "name each route reflector once"))
            seen_rr.add(rr)
    vnis: dict[int, str] = {}
    for net_name, net in topo.networks.items():
        path = f"networks.{net_name}"
        if net.overlay is not None:
            if not topo.hosts:
                add(Problem(f"{path}.overlay", "needs the hosts it spans", "add hosts: (name → underlay address)"))
            if net.mode == "bridged":
                add(Problem(f"{path}.overlay", "a bridged network is the LAN's; it does not span hosts", "use mode: nat, host or isolated"))
            if net.overlay.vni in vnis:
                add(Problem(f"{path}.overlay.vni", f"{net.overlay.vni} is also the VNI of networks.{vnis[net.overlay.vni]}", "give each overlay network its own VNI"))
            vnis.setdefault(net.overlay.vni, net_name)
            if net.mtu is not None and net.mtu > 65535 - 70 and any(":" in a for a in topo.hosts.values()):
                add(Problem(f"{path}.mtu", f"{net.mtu} cannot fit in any IPv6 underlay with VXLAN's 70 bytes", "use at most 65465, or omit it"))
            elif net.mtu is not None and net.mtu > 65535 - 50:
                add(Problem(f"{path}.mtu", f"{net.mtu} cannot fit in any underlay with VXLAN's 50 bytes", "use at most 65485, or omit it"))
        if net.dhcp is not None and net.dhcp.host is not None:
            if net.overlay is None:
                add(Problem(f"{path}.dhcp.host", "only an overlay network spans hosts", "remove it, or add overlay:"))
            elif net.dhcp.host not in topo.hosts:
                add(Problem(f"{path}.dhcp.host", f"no host named {net.dhcp.host!r} (known: {known})", "name one of hosts:"))


def known_address(topo: Topology, name: str, network: str) -> ipaddress.IPv4Address | None:
    """The fixed address of endpoint or VM `name` on `network`: declared, or a DHCP reservation."""
    ep = topo.endpoints.get(name)
    if isinstance(ep, NetnsSpec) and ep.network == network and ep.address:
        return iface4(ep.address).ip
    if isinstance(ep, TunSpec) and ep.address:
        return None
    vm = topo.vms.get(name)
    for nic in vm.nics if vm else ():
        if nic.network == network and nic.address:
            return ipaddress.IPv4Address(nic.address)
    return None


def known_address6(topo: Topology, name: str, network: str) -> ipaddress.IPv6Address | None:
    """The fixed IPv6 address of endpoint `name` on `network` (declared address6), if any."""
    ep = topo.endpoints.get(name)
    if isinstance(ep, NetnsSpec) and ep.network == network and ep.address6:
        return iface6(ep.address6).ip
    return None


def forward_target(topo: Topology, network: str, to: str) -> tuple[ipaddress.IPv4Address | None, int | None]:
    """(address, port or None for 'the same port') of a forward's `to:`; address None if unknown."""
    host, _, port = to.partition(":")
    address = ipaddress.IPv4Address(host) if host[0].isdigit() else known_address(topo, host, network)
    return address, int(port) if port else None


def _forwards(topo: Topology, add, broken: frozenset[str] = frozenset()) -> None:
    seen: dict[tuple[str, int], str] = {}
    for net_name, net in topo.networks.items():
        for i, fwd in enumerate(net.forwards):
            path = f"networks.{net_name}.forwards.{i}"
            if net.mode != "nat":
                add(Problem(path, f"port forwards need mode: nat (this network is {net.mode})", "move it to a nat network"))
                continue
            lo, hi = port_span(fwd.port)
            for port in range(lo, hi + 1):
                if (fwd.proto, port) in seen:
                    add(Problem(f"{path}.port", f"{fwd.proto} port {port} is already forwarded by {seen[(fwd.proto, port)]}", "forward each port once"))
                    break
                seen[(fwd.proto, port)] = path
            address, to_port = forward_target(topo, net_name, fwd.to)
            name = fwd.to.partition(":")[0]
            addr = addressing(topo, net_name)
            if address is None:
                if name in broken:
                    pass  # reported for itself
                elif name in topo.endpoints or name in topo.vms:
                    add(Problem(f"{path}.to", f"{name} has no fixed address on {net_name}", "give it address: (or a DHCP reservation) to forward to it"))
                else:
                    add(Problem(f"{path}.to", f"no endpoint or VM named {name!r}", "name one, or write its address"))
            elif addr.subnet is None or address not in addr.subnet or address in (addr.gateway, addr.subnet.network_address, addr.subnet.broadcast_address):
                add(Problem(f"{path}.to", f"{address} is not a host address of networks.{net_name}.subnet", "forward to an address inside the network"))
            if to_port is not None and lo != hi:
                add(Problem(f"{path}.to", "a port range forwards to the same ports", "drop the :port from to:"))


def _allows(topo: Topology, add, broken: frozenset[str] = frozenset()) -> None:
    for i, rule in enumerate(topo.allow):
        path = f"allow.{i}"
        for field, name in (("from", rule.from_), ("to", rule.to)):
            net = topo.networks.get(name)
            if net is None and name in broken:
                pass
            elif net is None:
                add(Problem(f"{path}.{field}", f"no network named {name!r}", "name a network of this topology"))
            elif net.mode in ("isolated", "bridged"):
                add(Problem(f"{path}.{field}", f"networks.{name} is {net.mode}: it is not routed by the host", "allow between host or nat networks"))
        if rule.from_ == rule.to:
            add(Problem(path, "from and to are the same network", "traffic inside a network is always allowed"))
        if rule.ports and not rule.proto:
            add(Problem(f"{path}.ports", "ports need a protocol", "add proto: tcp or proto: udp"))

def _free_host(ip: ipaddress.IPv4Address, subnet: ipaddress.IPv4Network, service: ipaddress.IPv4Address | None) -> bool:
    return ip in subnet and ip not in (subnet.network_address, subnet.broadcast_address, service)


def _names(topo: Topology, add) -> None:
    """Things vnet derives from names must not collide: namespaces, DNS names, tap MACs."""
    for vm_name in topo.vms:
        if vm_name in topo.endpoints:
            add(Problem(f"vms.{vm_name}", f"{vm_name!r} is also an endpoint's name", "name VMs and endpoints apart (both become DNS names)"))
    taken_ns = {names.endpoint_netns(topo.name, n, ep.netns): n for n, ep in topo.endpoints.items() if isinstance(ep, NetnsSpec)}
    for net_name, net in topo.networks.items():
        if net.mode == "isolated" and wants_service(topo, net_name):
            ns = names.service_netns(topo.name, net_name)
            if ns in taken_ns:
                add(Problem(f"endpoints.{taken_ns[ns]}", f"its namespace {ns} is the one serving networks.{net_name}", "rename the endpoint"))
    from vnet.names import DHCP_KEYWORDS, GATEWAY_NAME, hostname, nic_hostname
    from vnet.qemuargs import nic_mac  # here: qemuargs imports the spec

    # names that become DHCP/DNS names: none may be a word dnsmasq reads as a keyword, and none
    # may take the gateway's DNS name on a network that has a gateway
    def dns_name_ok(name: str, path: str, net_name: str | None) -> None:
        if name in DHCP_KEYWORDS:
            add(Problem(path, f"{name!r} is a keyword to dnsmasq ({', '.join(sorted(DHCP_KEYWORDS))}), not a host name", "choose another name"))
        elif net_name is not None and name == GATEWAY_NAME and topo.networks[net_name].mode in ("host", "nat"):
            add(Problem(path, f"{GATEWAY_NAME!r} is the DNS name of networks.{net_name}'s gateway", f"choose another name; {GATEWAY_NAME}.<domain> always answers with the gateway's address"))

    for ep_name, ep in topo.endpoints.items():
        network = getattr(ep, "network", None)
        if network is not None:
            dns_name_ok(hostname(ep_name), f"endpoints.{ep_name}", network if network in topo.networks else None)
    for vm_name, vm in topo.vms.items():
        for i, nic in enumerate(vm.nics):
            dns_name_ok(nic_hostname(vm_name, i), f"vms.{vm_name}" if i == 0 else f"vms.{vm_name}.nics.{i}", nic.network if nic.network in topo.networks else None)
    for net_name, net in topo.networks.items():
        for i, h in enumerate(net.dhcp.hosts if net.dhcp else ()):
            if h.name:
                dns_name_ok(hostname(h.name), f"networks.{net_name}.dhcp.hosts.{i}.name", net_name)
        if net.dns is not None and net.mode in ("host", "nat"):
            for rec in net.dns.records:
                if rec in (GATEWAY_NAME, f"{GATEWAY_NAME}.{net.dns.domain}"):
                    add(Problem(f"networks.{net_name}.dns.records.{rec}", "is the gateway's own DNS name", "choose another name"))

    # the DNS names on each network: its endpoints', then its VM NICs', grouped in one pass (a scan
    # of every endpoint per network was 100 × 10,000 steps at 10,000 endpoints)
    on_network: dict[str, list[tuple[str, str]]] = {}
    for n, ep in topo.endpoints.items():
        on_network.setdefault(getattr(ep, "network", None), []).append((hostname(n), f"endpoints.{n}"))
    for vm_name, vm in topo.vms.items():
        if vm_name in topo.endpoints:
            continue  # its name clash is reported once, above
        for i, nic in enumerate(vm.nics):
            on_network.setdefault(nic.network, []).append((nic_hostname(vm_name, i), f"vms.{vm_name}.nics.{i}"))
    for net_name in topo.networks:
        seen: dict[str, str] = {}
        for dns_name, path in on_network.get(net_name, ()):
            if dns_name in seen and seen[dns_name].split(".")[:2] != path.split(".")[:2]:
                add(Problem(path, f"its DNS name {dns_name!r} on networks.{net_name} is also {seen[dns_name]}'s", "rename one of them"))
            seen.setdefault(dns_name, path)
    tap_macs: dict[str, tuple[str, str]] = {}
    for vm_name, vm in topo.vms.items():
        for i, nic in enumerate(vm.nics):
            guest = nic_mac(topo, vm_name, i)
            mac = names.tap_mac(guest)
            other = tap_macs.get(mac)
            if other and other[1] != guest:  # the same guest MAC twice is reported already
                add(Problem(f"vms.{vm_name}.nics.{i}.mac", f"its tap would share MAC {mac} with {other[0]} (only the first byte differs)", "change more than the first byte"))
            tap_macs.setdefault(mac, (f"vms.{vm_name}.nics.{i}", guest))


def _services(topo: Topology, add) -> None:
    for net_name, net in topo.networks.items():
        path = f"networks.{net_name}"
        for field in ("dhcp", "dns"):
            if getattr(net, field) is None:
                continue
            if net.mode == "bridged":
                add(Problem(f"{path}.{field}", "a bridged network is served by its LAN's DHCP/DNS", f"remove {field}:, or use mode: nat"))
            elif not net.subnet:
                add(Problem(f"{path}.subnet", f"is required to serve {field.upper()}", "add e.g. subnet: 10.20.0.0/24"))
        if net.dhcp is None or net.mode == "bridged" or not net.subnet:
            continue
        addr = addressing(topo, net_name)
        subnet = addr.subnet
        assert subnet is not None
        first, last = dhcp_range(topo, net_name)
        if net.dhcp.range:
            for i, a in enumerate((first, last)):
                if a not in subnet or a in (subnet.network_address, subnet.broadcast_address):
                    add(Problem(f"{path}.dhcp.range.{i}", f"{a} is not a host address of {subnet}", "keep the range inside the subnet"))
            if first > last:
                add(Problem(f"{path}.dhcp.range", f"{first} comes after {last}", "write the lower address first"))
            elif addr.service is not None and first <= addr.service <= last:
                add(Problem(f"{path}.dhcp.range", f"includes {addr.service}, the network's own address", "start the range above it"))
        elif first > last:
            add(Problem(f"{path}.subnet", "leaves no address to hand out", "use a larger subnet"))
        seen: dict[str, int] = {}
        reserved: dict[ipaddress.IPv4Address, int] = {}
        for i, h in enumerate(net.dhcp.hosts):
            ip = ipaddress.IPv4Address(h.address)
            if not _free_host(ip, subnet, addr.service):
                add(Problem(f"{path}.dhcp.hosts.{i}.address", f"{h.address} is not a free host address of {subnet}", "pick one inside the subnet"))
            if ip in reserved:
                add(Problem(f"{path}.dhcp.hosts.{i}.address", f"{ip} is also reserved by hosts.{reserved[ip]}", "one reservation per address"))
            reserved[ip] = i
            if h.mac in seen:
                add(Problem(f"{path}.dhcp.hosts.{i}.mac", f"{h.mac} is also reserved by hosts.{seen[h.mac]}", "one reservation per MAC"))
            seen[h.mac] = i
        for i, r in enumerate(net.dhcp.routes):
            if ipaddress.IPv4Address(r.via) not in subnet:
                add(Problem(f"{path}.dhcp.routes.{i}.via", f"{r.via} is not inside {subnet}", "clients can only use a gateway on their subnet"))


def _vms(topo: Topology, add, claim_ifname, macs: dict[str, str], addresses: dict, broken: frozenset[str] = frozenset()) -> None:
    from vnet.qemuargs import nic_mac, nic_tap, user_problem  # here: qemuargs imports the spec

    for problem in vmfiles.relative(topo):
        add(problem)

    # derived MACs may not collide either; only the VM NICs below are checked against them, so
    # without a NIC there is nothing to derive (a hash per endpoint, a fifth of these checks)
    if any(vm.nics for vm in topo.vms.values()):
        for ep_name, ep in topo.endpoints.items():
            mac = getattr(ep, "mac", None)
            if mac is None and isinstance(ep, (TapSpec, NetnsSpec)):
                macs.setdefault(names.mac(topo.name, ep_name), ep_name)
    displays: dict[str, str] = {}
    for vm_name, vm in topo.vms.items():
        if vm.display.startswith("vnc:"):
            if vm.display in displays:
                add(Problem(f"vms.{vm_name}.display", f"{vm.display} is also the display of vms.{displays[vm.display]}",
                            "give each VM its own display number, or write vnc and let vnet choose"))
            displays.setdefault(vm.display, vm_name)
    for vm_name, vm in topo.vms.items():
        path = f"vms.{vm_name}"
        if sum(bool(x) for x in (vm.image, vm.kernel or vm.disk)) != 1:
            add(Problem(path, "needs exactly one of image:, kernel: (with initrd, append) or disk:", "e.g. image: tiny for vnet's test guest"))
        if (vm.initrd or vm.append) and not vm.kernel:
            add(Problem(f"{path}.kernel", "initrd: and append: need a kernel:", "add kernel:, or remove them"))
        if vm.user is not None and (bad := user_problem(vm.user)):
            add(Problem(f"{path}.user", *bad))
        if not vm.nics:
            add(Problem(f"{path}.nics", "is empty", "attach the VM to a network: nics: [{network: <name>}]"))
        for i, nic in enumerate(vm.nics):
            npath = f"{path}.nics.{i}"
            if nic.network not in topo.networks:
                if nic.network not in broken:
                    add(Problem(f"{npath}.network", f"no network named {nic.network!r}", "declare it under networks:"))
                continue
            claim_ifname(nic_tap(topo, vm_name, i), f"{npath}.ifname")
            mac = nic_mac(topo, vm_name, i)
            if mac in macs:
                add(Problem(f"{npath}.mac", f"{mac} is also the MAC of {macs[mac]}", "MACs must be unique; omit it to get a stable unique one"))
            macs[mac] = npath
            if nic.address:
                ip = ipaddress.IPv4Address(nic.address)
                net = topo.networks[nic.network]
                addr = addressing(topo, nic.network)
                if net.dhcp is None:
                    add(Problem(f"{npath}.address", f"networks.{nic.network} serves no DHCP to reserve it in", "add dhcp: to the network, or configure the guest yourself"))
                elif addr.subnet is None or not _free_host(ip, addr.subnet, addr.service):
                    add(Problem(f"{npath}.address", f"{ip} is not a free host address of networks.{nic.network}", "pick one inside the subnet"))
                if ip in addresses:
                    add(Problem(f"{npath}.address", f"{ip} is also the address of {addresses[ip]}", "give each NIC its own address"))
                addresses[ip] = npath


def _ipv6(topo: Topology, add) -> None:
    """subnet6, address6, dhcp6 and nat6 of networks, address6 of endpoints."""
    subnets: list[tuple[str, ipaddress.IPv6Network]] = []
    for net_name, net in topo.networks.items():
        path = f"networks.{net_name}"
        if not net.subnet6:
            for field, unset in (("address6", None), ("dhcp6", False)):
                if getattr(net, field) != unset:
                    add(Problem(f"{path}.{field}", "needs subnet6", "add e.g. subnet6: 2001:db8:77::/64, or remove it"))
            if net.nat6 is not None:
                add(Problem(f"{path}.nat6", "needs subnet6", "add subnet6:, or remove nat6:"))
            continue
        if net.mode == "bridged":
            add(Problem(f"{path}.subnet6", "a bridged network takes its IPv6 from its LAN", "remove subnet6:, or use mode: nat"))
            continue
        if not net.subnet:
            add(Problem(f"{path}.subnet6", "IPv6-only networks are not supported yet", "add an IPv4 subnet: as well"))
        if net.nat6 is not None and net.mode != "nat":
            add(Problem(f"{path}.nat6", f"has no meaning in {net.mode} mode", "remove it, or use mode: nat"))
        if net.address6 and net.mode == "isolated":
            add(Problem(f"{path}.address6", "the bridge has no address in isolated mode", "remove it, or use mode: host"))
        subnet = ipaddress.IPv6Network(net.subnet6)
        for other_name, other in subnets:
            if subnet.overlaps(other):
                add(Problem(f"{path}.subnet6", f"{subnet} overlaps networks.{other_name}.subnet6 {other}", "use a separate prefix"))
        subnets.append((net_name, subnet))
        if net.dhcp6 is False and subnet.prefixlen != 64:
            add(Problem(f"{path}.subnet6", f"SLAAC (the default) needs a /64, not /{subnet.prefixlen}", "use a /64, or hand out addresses by DHCPv6: dhcp6: true"))
        addr = addressing6(topo, net_name)
        if net.address6:
            gw = ipaddress.IPv6Address(net.address6)
            if gw not in subnet or gw == subnet.network_address:
                add(Problem(f"{path}.address6", f"{gw} is not a host address of {subnet}", "pick an address inside subnet6"))
        if isinstance(net.dhcp6, tuple):
            first, last = (ipaddress.IPv6Address(a) for a in net.dhcp6)
            for i, a in enumerate((first, last)):
                if a not in subnet or a == subnet.network_address:
                    add(Problem(f"{path}.dhcp6.{i}", f"{a} is not a host address of {subnet}", "keep the range inside subnet6"))
            if first > last:
                add(Problem(f"{path}.dhcp6", f"{first} comes after {last}", "write the lower address first"))
            elif addr.service is not None and first <= addr.service <= last:
                add(Problem(f"{path}.dhcp6", f"includes {addr.service}, the network's own address", "start the range above it"))
    seen: dict[ipaddress.IPv6Address, str] = {}
    for ep_name, ep in topo.endpoints.items():
        value = getattr(ep, "address6", None)
        if not value:
            continue
        path = f"endpoints.{ep_name}.address6"
        iface = ipaddress.IPv6Interface(value)
        if iface.ip in seen:
            add(Problem(path, f"{iface.ip} is also the address of {seen[iface.ip]}", "give each endpoint its own address"))
        seen[iface.ip] = f"endpoints.{ep_name}"
        network = getattr(ep, "network", None)
        if network not in topo.networks:
            continue  # reported already
        net = topo.networks[network]
        if net.mode == "bridged":
            continue  # the LAN's addressing is not declared
        addr = addressing6(topo, network)
        rng = dhcp6_range(topo, network)
        if addr.subnet is None:
            add(Problem(path, f"networks.{network} has no subnet6", f"add subnet6: {iface.network} to networks.{network}"))
        elif iface.network != addr.subnet:
            add(Problem(path, f"{iface} is not inside networks.{network}.subnet6 {addr.subnet}", f"use an address in {addr.subnet} with /{addr.subnet.prefixlen}"))
        elif iface.ip == addr.subnet.network_address:
            add(Problem(path, f"{iface.ip} is the subnet-router anycast address", "pick a host address"))
        elif iface.ip == addr.service:
            add(Problem(path, f"{iface.ip} is the network's own address (gateway or its service)", "pick another host address"))
        elif rng is not None and rng[0] <= iface.ip <= rng[1]:
            add(Problem(path, f"{iface.ip} is inside the DHCPv6 range {rng[0]}-{rng[1]}", "pick an address outside it"))
    for net_name, net in topo.networks.items():
        if net.address6 and ipaddress.IPv6Address(net.address6) in seen:
            add(Problem(f"networks.{net_name}.address6", f"{net.address6} is also the address of {seen[ipaddress.IPv6Address(net.address6)]}", "pick another address"))
