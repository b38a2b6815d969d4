"""`vnet import`: a host's hand-made network (bridges and their ports, taps, veths into
namespaces, tun devices, addresses and routes, masquerade and DNAT rules, forwarding switches, a
dnsmasq serving a bridge) → a topology file that describes it. Pure: the facts come in as plain
data (`Host`), read by `vnet.adopt.read_host`; what the file cannot express is listed as comments
and left alone.

A bridge's mode follows from what is around it: a physical NIC (or any port that is not a tap or
an endpoint's veth) among its ports → bridged; no address → isolated; an address and a
masquerade rule for its subnet → nat; an address alone → host. Imported topologies keep the
names they found: `bridge:` and the bridge's `mac:`, a tap's `ifname:`, a veth's `host_ifname:`,
the namespace as `netns:` with `own_netns: true` (vnet owns it after `vnet adopt`: destroy removes
it, as it removes everything else that was imported).

The same analysis tells `vnet adopt` which hand-made rules and daemons vnet's own replace
(`Foreign`).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from dataclasses import dataclass, field

from vnet.spec.models import IFNAMSIZ

# ------------------------------------------------------------------------------------------------
# facts (what the reader hands in)


@dataclass
class Link:
    name: str
    kind: str | None  # bridge | tun | veth | None (a NIC) …
    master: str | None = None
    mac: str | None = None
    mtu: int = 1500
    up: bool = True
    alias: str | None = None
    tun_mode: str | None = None  # tap | tun
    owner: int | None = None
    group: int | None = None
    peer_ns: str | None = None  # veth: the named namespace its peer is in (None: the same one, or unnamed)
    peer: str | None = None  # veth: the peer's name there


@dataclass
class Addr:
    ifname: str
    cidr: str  # 10.0.0.1/24
    proto: int = 0


@dataclass
class Route:
    dst: str  # "default" or a.b.c.d/n
    ifname: str | None
    gateway: str | None = None
    proto: int = 3
    scope: int = 0


@dataclass
class Netns:
    name: str
    links: dict[str, Link] = field(default_factory=dict)
    addrs: list[Addr] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    lo_alias: str | None = None


@dataclass
class Dnsmasq:
    pid: int
    argv: list[str]
    config: str = ""  # text of the --conf-file it reads, if any


@dataclass
class Host:
    links: dict[str, Link] = field(default_factory=dict)
    addrs: list[Addr] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    namespaces: dict[str, Netns] = field(default_factory=dict)  # the namespaces host veths lead into
    iptables: str = ""  # iptables-save
    nft: dict = field(default_factory=dict)  # nft -j list ruleset
    forwarding: dict[str, str] = field(default_factory=dict)  # ifname → net.ipv4.conf.<if>.forwarding
    ip_forward: str = "0"
    dnsmasq: list[Dnsmasq] = field(default_factory=list)
    users: dict[int, str] = field(default_factory=dict)  # uid → name, for owners
    groups: dict[int, str] = field(default_factory=dict)

    @property
    def default_dev(self) -> str | None:
        return next((r.ifname for r in self.routes if r.dst == "default"), None)


# ------------------------------------------------------------------------------------------------
# hand-made rules


@dataclass(frozen=True)
class Rule:
    """A NAT or forwarding rule found on the host, iptables or nftables."""

    source: str  # iptables | nft
    action: str  # masquerade | dnat | accept | other
    table: str  # iptables: nat/filter; nft: "<family> <table>"
    chain: str
    text: str  # iptables: the rule as iptables-save prints it (-A …); nft: a description
    handle: int | None = None  # nft
    saddr: str | None = None  # masquerade: the source network
    oif: str | None = None
    iif: str | None = None
    proto: str | None = None
    dport: str | None = None  # 8080 or 5000-5010
    to: str | None = None  # dnat: address[:port]
    plain: bool = True  # only matches vnet can express (no marks, no other matches)


_IPT_FLAGS = {"-s", "--source", "-d", "--destination", "-o", "--out-interface", "-i", "--in-interface", "-p", "--protocol",
              "--dport", "--destination-port", "-j", "--to-destination", "-m", "--ctstate", "--state"}


def parse_iptables(text: str) -> list[Rule]:
    """The rules of iptables-save output, each with what vnet can read of it."""
    out: list[Rule] = []
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        if not line.startswith("-A "):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        chain = words[1]
        opts: dict[str, str] = {}
        plain, i, negate = True, 2, False
        while i < len(words):
            w = words[i]
            if w == "!":
                negate, i = True, i + 1
                continue
            value = words[i + 1] if i + 1 < len(words) else ""
            if w not in _IPT_FLAGS:
                plain = False
            elif w in ("-m",) and value not in ("tcp", "udp", "conntrack", "state"):
                plain = False
            elif negate and not (w in ("-d", "--destination") and opts.get("-s") == value):
                plain = False  # `! -d <own subnet>` is the usual masquerade guard; anything else is not
            else:
                opts.setdefault({"--source": "-s", "--destination": "-d", "--out-interface": "-o", "--in-interface": "-i",
                                 "--protocol": "-p", "--destination-port": "--dport", "--state": "--ctstate"}.get(w, w), value)
            negate = False
            i += 2
        target = opts.get("-j", "")
        action = {"MASQUERADE": "masquerade", "DNAT": "dnat", "ACCEPT": "accept"}.get(target, "other")
        out.append(Rule("iptables", action, table, chain, line, saddr=_net(opts.get("-s")), oif=opts.get("-o"), iif=opts.get("-i"),
                        proto=opts.get("-p"), dport=(opts.get("--dport") or "").replace(":", "-") or None,
                        to=opts.get("--to-destination"), plain=plain and (action != "other")))
    return out


def _net(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.IPv4Network(value, strict=False))
    except ValueError:
        return None


_IPT_TABLES = {"nat", "filter", "mangle", "raw", "security"}


def iptables_nft_table(family: str, name: str, chains: list[str]) -> bool:
    """True for a table iptables-nft made (its rules are read through iptables-save instead)."""
    return family in ("ip", "ip6") and name in _IPT_TABLES and all(c.isupper() for c in chains)


def parse_nft(ruleset: dict) -> tuple[list[Rule], dict[str, dict]]:
    """The NAT rules of hand-made nftables tables (vnet's and iptables-nft's left out), and every
    such table: "<family> <name>" → {"chains": {name: rule count}, "sets": n}."""
    items = [next(iter(x.items())) for x in ruleset.get("nftables", []) if isinstance(x, dict) and x]
    chains: dict[str, list[str]] = {}
    for kind, obj in items:
        if kind == "chain":
            chains.setdefault(f"{obj['family']} {obj['table']}", []).append(obj["name"])
    tables: dict[str, dict] = {}
    for kind, obj in items:
        if kind == "table":
            key = f"{obj['family']} {obj['name']}"
            if obj["name"].startswith("vnet-") or iptables_nft_table(obj["family"], obj["name"], chains.get(key, [])):
                continue
            tables[key] = {"chains": {c: 0 for c in chains.get(key, [])}, "sets": 0}
    rules: list[Rule] = []
    for kind, obj in items:
        key = f"{obj.get('family')} {obj.get('table')}"
        if key not in tables:
            continue
        if kind in ("set", "map", "flowtable", "counter", "quota", "limit", "ct helper"):
            tables[key]["sets"] += 1
        if kind != "rule":
            continue
        tables[key]["chains"][obj["chain"]] = tables[key]["chains"].get(obj["chain"], 0) + 1
        rules.append(_nft_rule(key, obj))
    return rules, tables


def _nft_rule(table: str, obj: dict) -> Rule:
    saddr = oif = iif = proto = dport = to = None
    action, plain = "other", True
    for e in obj.get("expr", []):
        (k, v), = e.items() if isinstance(e, dict) and len(e) == 1 else ((None, None),)
        if k == "match" and v.get("op") in ("==", "in"):
            left, right = v.get("left", {}), v.get("right")
            field_ = left.get("payload", {}).get("field") if isinstance(left, dict) else None
            meta = left.get("meta", {}).get("key") if isinstance(left, dict) else None
            if field_ == "saddr" and left["payload"].get("protocol") == "ip":
                saddr = _net(f"{right['prefix']['addr']}/{right['prefix']['len']}" if isinstance(right, dict) and "prefix" in right else right)
            elif field_ == "dport":
                proto = left["payload"].get("protocol")
                dport = f"{right['range'][0]}-{right['range'][1]}" if isinstance(right, dict) and "range" in right else str(right)
            elif meta == "oifname":
                oif = right
            elif meta == "iifname":
                iif = right
            elif meta == "l4proto":
                proto = right
            else:
                plain = False
        elif k == "match":
            plain = False
        elif k == "masquerade":
            action = "masquerade"
        elif k == "dnat" and isinstance(v, dict):
            action = "dnat"
            to = f"{v.get('addr')}" + (f":{v['port']}" if v.get("port") else "")
        elif k == "accept":
            action = "accept"
        elif k in ("counter",):
            pass
        else:
            plain = False
    text = f"nft rule {table} {obj['chain']} handle {obj.get('handle')}"
    return Rule("nft", action, table, obj["chain"], text, handle=obj.get("handle"), saddr=saddr, oif=oif, iif=iif, proto=proto,
                dport=dport, to=to, plain=plain and action != "other")


# ------------------------------------------------------------------------------------------------
# dnsmasq


@dataclass
class DnsmasqConf:
    interface: str | None = None
    ranges: list[tuple[str, str, str | None]] = field(default_factory=list)  # (start, end, lease)
    hosts: list[tuple[str, str, str | None]] = field(default_factory=list)  # (mac, ip, name)
    domain: str | None = None
    servers: list[str] = field(default_factory=list)
    dns: bool = True
    leasefile: str | None = None
    unknown: list[str] = field(default_factory=list)


_HARMLESS = {"bind-interfaces", "bind-dynamic", "except-interface", "pid-file", "no-resolv", "no-hosts", "keep-in-foreground",
             "no-daemon", "log-facility", "log-dhcp", "log-queries", "dhcp-authoritative", "expand-hosts", "strict-order",
             "listen-address", "user", "group", "conf-file", "local", "domain-needed", "bogus-priv", "dhcp-no-override",
             "no-ping", "leasefile-ro"}
_SHORT = {"-i": "interface", "-F": "dhcp-range", "-G": "dhcp-host", "-s": "domain", "-S": "server", "-p": "port",
          "-l": "dhcp-leasefile", "-C": "conf-file", "-x": "pid-file", "-z": "bind-interfaces", "-R": "no-resolv",
          "-k": "keep-in-foreground", "-d": "no-daemon", "-u": "user", "-g": "group", "-a": "listen-address", "-K": "dhcp-authoritative"}


def dnsmasq_options(argv: list[str], config: str) -> list[tuple[str, str]]:
    """(option, value) from a dnsmasq command line and its config file, in the order dnsmasq reads them."""
    out: list[tuple[str, str]] = []
    for line in config.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            k, _, v = line.partition("=")
            out.append((k.strip(), v.strip()))
    args = list(argv[1:])
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            k, eq, v = a[2:].partition("=")
            out.append((k, v))
        elif a[:2] in _SHORT:
            name = _SHORT[a[:2]]
            if len(a) > 2:
                v = a[2:]
            elif name in ("bind-interfaces", "no-resolv", "keep-in-foreground", "no-daemon", "dhcp-authoritative"):
                v = ""
            else:
                i += 1
                v = args[i] if i < len(args) else ""
            out.append((name, v))
        else:
            out.append((a, ""))
        i += 1
    return out


def parse_dnsmasq(argv: list[str], config: str = "") -> DnsmasqConf:
    c = DnsmasqConf()
    for k, v in dnsmasq_options(argv, config):
        if k == "interface":
            if c.interface is None:
                c.interface = v
            elif v != c.interface:
                c.unknown.append(f"interface={v}")
        elif k == "dhcp-range":
            parts = [p for p in v.split(",") if p and not p.startswith(("set:", "tag:"))]
            if len(parts) >= 2:
                lease = parts[3] if len(parts) >= 4 else (parts[2] if len(parts) == 3 and not _is_ip(parts[2]) else None)
                c.ranges.append((parts[0], parts[1], lease))
            else:
                c.unknown.append(f"dhcp-range={v}")
        elif k == "dhcp-host":
            parts = v.split(",")
            mac = next((p.lower() for p in parts if re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", p)), None)
            ip = next((p for p in parts if _is_ip(p)), None)
            name = next((p for p in parts if p and p not in (mac, ip) and re.fullmatch(r"[a-z][a-z0-9_-]*", p)), None)
            if mac and ip:
                c.hosts.append((mac, ip, name))
            else:
                c.unknown.append(f"dhcp-host={v}")
        elif k == "domain":
            c.domain = v.split(",")[0]
        elif k == "server":
            if _is_ip(v):
                c.servers.append(v)
            else:
                c.unknown.append(f"server={v}")
        elif k == "port":
            c.dns = v != "0"
        elif k == "dhcp-leasefile":
            c.leasefile = v
        elif k not in _HARMLESS:
            c.unknown.append(f"{k}={v}" if v else k)
    return c


def _is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------
# the analysis


@dataclass
class Foreign:
    """What `vnet adopt` replaces with vnet's own: hand-made rules, and a dnsmasq per network."""

    rules: list[Rule] = field(default_factory=list)
    dnsmasq: dict[str, Dnsmasq] = field(default_factory=dict)  # network → the process
    leasefiles: dict[str, str] = field(default_factory=dict)  # network → its lease file
    nft_tables: dict[str, dict] = field(default_factory=dict)  # tables the rules are in, as parse_nft saw them


@dataclass
class Imported:
    topology: dict
    comments: list[str]
    foreign: Foreign
    notes: dict[str, list[str]] = field(default_factory=dict)  # per network/endpoint: a comment beside it

    def text(self) -> str:
        return render(self)


_NAME_OK = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def safe_name(raw: str, taken: set[str], prefix: str) -> str:
    """A topology-file name (lower-case, starting with a letter) for an interface or namespace."""
    name = re.sub(r"[^a-z0-9_-]", "-", raw.lower())
    if not name or not name[0].isalpha():
        name = f"{prefix}{name}"
    name = name[:32]
    base, n = name, 2
    while name in taken:
        name = f"{base[:29]}-{n}"
        n += 1
    taken.add(name)
    return name


def _endpoint_ns(host: Host, li: Link) -> Netns | None:
    """The namespace a veth leads into, when it looks like an endpoint: a named namespace holding
    the peer, lo, and nothing else."""
    if li.kind != "veth" or not li.peer_ns or li.peer_ns not in host.namespaces:
        return None
    ns = host.namespaces[li.peer_ns]
    others = [n for n in ns.links if n not in ("lo", li.peer)]
    if others or li.peer not in ns.links:
        return None
    return ns


def analyse(host: Host, name: str = "imported") -> Imported:
    comments: list[str] = []
    notes: dict[str, list[str]] = {}
    foreign = Foreign()
    ipt = parse_iptables(host.iptables)
    nft_rules, nft_tables = parse_nft(host.nft) if host.nft else ([], {})
    rules = ipt + nft_rules
    networks: dict[str, dict] = {}
    endpoints: dict[str, dict] = {}
    taken_net: set[str] = set()
    taken_ep: set[str] = set()
    used_rules: set[Rule] = set()
    ports_of = {b: [li for li in host.links.values() if li.master == b] for b, li in host.links.items() if li.kind == "bridge"}
    addrs_of: dict[str, list[Addr]] = {}
    for a in host.addrs:
        if ":" in a.cidr:  # IPv6 beside a hand-built network: seen, not imported
            comments.append(f"IPv6 address {a.cidr} on {a.ifname}: left alone (import reads IPv4 networks)")
            continue
        addrs_of.setdefault(a.ifname, []).append(a)

    for br, ports in sorted(ports_of.items()):
        bli = host.links[br]
        if bli.alias and bli.alias.startswith("vnet:"):
            continue  # vnet's already
        net_name = safe_name(br, taken_net, "net-")
        uplinks = [p for p in ports if not (p.kind == "tun" and p.tun_mode == "tap") and _endpoint_ns(host, p) is None]
        net: dict = {"bridge": br}
        baddrs = addrs_of.get(br, [])
        if len(uplinks) > 1:
            comments.append(f"bridge {br}: more than one port that is neither a tap nor an endpoint's veth "
                            f"({', '.join(p.name for p in uplinks)}): left alone")
            taken_net.discard(net_name)
            continue
        if uplinks:
            net["mode"] = "bridged"
            net["uplink"] = uplinks[0].name
        elif not baddrs:
            net["mode"] = "isolated"
            # the endpoints' addresses say which subnet the network uses (the file needs it for them)
            nets = {str(ipaddress.IPv4Interface(a.cidr).network) for p in ports for ns in [_endpoint_ns(host, p)] if ns
                    for a in ns.addrs if a.ifname == p.peer and ":" not in a.cidr}
            if len(nets) == 1:
                net["subnet"] = nets.pop()
        else:
            gw = ipaddress.IPv4Interface(baddrs[0].cidr)
            subnet = str(gw.network)
            if len(baddrs) > 1:
                notes.setdefault(net_name, []).append(
                    f"{br} also has {', '.join(a.cidr for a in baddrs[1:])}: left alone (goes with the bridge on destroy)")
            masq = [r for r in rules if r.action == "masquerade" and r.saddr == subnet]
            net["subnet"] = subnet
            if gw.ip != next(gw.network.hosts()):
                net["address"] = str(gw.ip)
            if masq and all(r.plain for r in masq):
                up = next((r.oif for r in masq if r.oif), None) or host.default_dev
                net["mode"] = "nat"
                if up:
                    net["uplink"] = up
                if not any(r.oif for r in masq):
                    notes.setdefault(net_name, []).append(
                        f"masqueraded out of any interface by hand; vnet masquerades out of {up} only")
                foreign.rules += masq
                used_rules.update(masq)
                fwd = _forwards(rules, gw.network, up, used_rules, foreign, endpoints_by_ip={})
                if fwd:
                    net["forwards"] = fwd
                for r in rules:  # hand-made FORWARD accepts for this bridge: vnet's ruleset does it
                    if r.action == "accept" and r.plain and r.chain.lower() == "forward" and br in (r.iif, r.oif) \
                            and {r.iif, r.oif} <= {br, up, None}:
                        foreign.rules.append(r)
                        used_rules.add(r)
                if host.forwarding.get(br) != "1" or (up and host.forwarding.get(up) != "1"):
                    notes.setdefault(net_name, []).append(
                        f"forwarding was off on {br} or {up}: vnet switches it on (per interface)")
            else:
                net["mode"] = "host"
                if masq:
                    comments.append(f"masquerade for {subnet} has matches vnet cannot express: left alone ({masq[0].text})")
        if bli.mac and net["mode"] != "bridged":
            net["mac"] = bli.mac
        if bli.mtu and bli.mtu != 1500:
            net["mtu"] = bli.mtu
        networks[net_name] = net

        for p in sorted(ports, key=lambda p: p.name):
            if uplinks and p is uplinks[0]:
                continue
            if p.kind == "tun" and p.tun_mode == "tap":
                ep_name = safe_name(p.name, taken_ep, "tap-")
                ep = {"kind": "tap", "network": net_name, "ifname": p.name}
                _owners(host, p, ep)
                ep["spoofing"] = "allow"  # the guest's MAC is not known here; hand-made taps had no guard
                endpoints[ep_name] = ep
                continue
            ns = _endpoint_ns(host, p)
            assert ns is not None
            ep_name = safe_name(ns.name, taken_ep, "ns-")
            inner = ns.links[p.peer]
            ep = {"kind": "netns", "network": net_name, "netns": ns.name, "own_netns": True, "host_ifname": p.name}
            if p.peer != "eth0":
                ep["ifname"] = p.peer
            if inner.mac:
                ep["mac"] = inner.mac
            iaddrs = [a for a in ns.addrs if a.ifname == p.peer and ":" not in a.cidr]
            for a in ns.addrs:
                if a.ifname == p.peer and ":" in a.cidr:
                    notes.setdefault(ep_name, []).append(f"IPv6 address {a.cidr}: left alone (import reads IPv4)")
            if iaddrs:
                ep["address"] = iaddrs[0].cidr
            if len(iaddrs) != 1:
                ep["spoofing"] = "allow"
                if iaddrs:
                    notes.setdefault(ep_name, []).append(f"also has {', '.join(a.cidr for a in iaddrs[1:])}: left alone")
            gw = net.get("address") or (str(next(ipaddress.IPv4Network(net["subnet"]).hosts())) if net.get("subnet") else None)
            for rt in ns.routes:
                if rt.proto == 2 or rt.scope == 253:
                    continue  # the kernel's own prefix route
                if rt.dst == "default" and rt.gateway == gw and net["mode"] in ("host", "nat") and iaddrs:
                    continue  # vnet's default route through the gateway
                notes.setdefault(ep_name, []).append(f"route {rt.dst} via {rt.gateway or rt.ifname} in {ns.name}: left alone")
            endpoints[ep_name] = ep

    # tun devices and taps outside bridges
    for li in sorted(host.links.values(), key=lambda x: x.name):
        if li.kind != "tun" or li.master or (li.alias or "").startswith("vnet:"):
            continue
        ep_name = safe_name(li.name, taken_ep, "tun-")
        ep = {"kind": li.tun_mode or "tun", "ifname": li.name}
        _owners(host, li, ep)
        tadds = addrs_of.get(li.name, [])
        if li.tun_mode == "tun" and tadds:
            ep["address"] = tadds[0].cidr
        elif tadds:
            notes.setdefault(ep_name, []).append(f"addresses {', '.join(a.cidr for a in tadds)}: left alone")
        endpoints[ep_name] = ep

    # dnsmasq serving a bridge
    by_bridge = {net["bridge"]: n for n, net in networks.items()}
    for d in host.dnsmasq:
        conf = parse_dnsmasq(d.argv, d.config)
        net_name = by_bridge.get(conf.interface or "")
        if net_name is None:
            comments.append(f"dnsmasq (pid {d.pid}) serves no imported bridge: left alone")
            continue
        net = networks[net_name]
        if net["mode"] not in ("host", "nat") or conf.unknown or len(conf.ranges) > 1:
            why = ", ".join(conf.unknown) or ("more than one dhcp-range" if len(conf.ranges) > 1 else f"a {net['mode']} network")
            comments.append(f"dnsmasq (pid {d.pid}) on {conf.interface}: {why} — not carried over, left alone")
            continue
        if conf.ranges:
            start, end, lease = conf.ranges[0]
            dhcp: dict = {"range": [start, end]}
            if lease:
                dhcp["lease"] = lease if lease[-1] in "smhd" or lease == "infinite" else f"{lease}s"
            if conf.hosts:
                dhcp["hosts"] = [{"mac": m, "address": ip, **({"name": n} if n else {})} for m, ip, n in conf.hosts]
            net["dhcp"] = dhcp
        if conf.dns:
            dns: dict = {}
            if conf.domain:
                dns["domain"] = conf.domain
            if conf.servers:
                dns["upstream"] = conf.servers
            net["dns"] = dns or True
        foreign.dnsmasq[net_name] = d
        if conf.leasefile:
            foreign.leasefiles[net_name] = conf.leasefile

    # what no network took
    for r in rules:
        if r in used_rules:
            continue
        if r.action in ("masquerade", "dnat") or (r.source == "nft" and r.action != "accept"):
            comments.append(f"{r.source} rule not expressed, left alone: {r.text}")
    if host.ip_forward == "1":
        comments.append("net.ipv4.ip_forward=1 (every interface forwards): left alone; vnet switches forwarding per interface")
    for nsname, ns in sorted(host.namespaces.items()):
        if not any(ep.get("netns") == nsname for ep in endpoints.values()) and not (ns.lo_alias or "").startswith("vnet"):
            comments.append(f"namespace {nsname}: more than one interface, or not behind a bridge: left alone")
    foreign.nft_tables = {k: v for k, v in nft_tables.items() if any(r.source == "nft" and r.table == k for r in foreign.rules)}
    topo = {"name": name, "networks": networks, "endpoints": endpoints}
    return Imported(topo, comments, foreign, notes)


def _forwards(rules: list[Rule], subnet: ipaddress.IPv4Network, up: str | None, used: set[Rule], foreign: Foreign,
              endpoints_by_ip: dict) -> list[dict]:
    out = []
    for r in rules:
        if r.action != "dnat" or not r.to or not r.plain or r.proto not in ("tcp", "udp") or not r.dport:
            continue
        addr, _, port = r.to.partition(":")
        if not _is_ip(addr) or ipaddress.IPv4Address(addr) not in subnet:
            continue
        if r.iif and r.iif != up:
            continue
        fwd: dict = {"proto": r.proto, "port": int(r.dport) if r.dport.isdigit() else r.dport, "to": f"{addr}:{port}" if port else addr}
        out.append(fwd)
        foreign.rules.append(r)
        used.add(r)
    return out


def _owners(host: Host, li: Link, ep: dict) -> None:
    if li.owner is not None:
        ep["owner"] = host.users.get(li.owner, li.owner)
    if li.group is not None:
        ep["group"] = host.groups.get(li.group, li.group)


# ------------------------------------------------------------------------------------------------
# the file


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_scalar(x)}" for k, x in v.items()) + "}"
    s = str(v)
    return json.dumps(s) if (not re.fullmatch(r"[A-Za-z0-9_./-]+", s) or s in ("true", "false", "yes", "no", "null", "on", "off")
                             or re.fullmatch(r"[0-9.]+", s) and s.count(".") != 3) else s


def render(imp: Imported) -> str:
    t = imp.topology
    lines = ["# imported by `vnet import` from what was on the host; `vnet adopt` takes it over as it is"]
    if imp.comments:
        lines.append("# not expressed here, and left alone by adopt and destroy:")
        lines += [f"#   - {c}" for c in imp.comments]
    lines.append(f"name: {t['name']}")
    lines.append("networks:" + ("" if t["networks"] else " {}"))
    for n, net in t["networks"].items():
        for note in imp.notes.get(n, []):
            lines.append(f"  # {note}")
        lines.append(f"  {n}:")
        for k, v in net.items():
            lines.append(f"    {k}: {_scalar(v)}")
    lines.append("endpoints:" + ("" if t["endpoints"] else " {}"))
    for n, ep in t["endpoints"].items():
        for note in imp.notes.get(n, []):
            lines.append(f"  # {note}")
        lines.append(f"  {n}: {_scalar(ep)}")
    return "\n".join(lines) + "\n"


__all__ = ["Addr", "Dnsmasq", "Foreign", "Host", "Imported", "Link", "Netns", "Route", "Rule", "analyse", "parse_dnsmasq",
           "parse_iptables", "parse_nft", "render", "IFNAMSIZ"]
