"""`vnet import` and `vnet adopt`: read a hand-made network off a host, and take it over.

`read_host` gathers the facts (vnet's own rtnetlink client in the target namespace and in the
namespaces its veths lead into, iptables-save, `nft -j list ruleset`, /proc/sys and /proc for a
dnsmasq); `vnet.importer` turns them into a topology file.

`adopt` takes ownership without rebuilding: it puts vnet's marks on what is there (the ifalias of
bridges, taps, both ends of veths and the `lo` of the namespaces; the protocol of addresses and
routes, replaced in place; the record of the forwarding switches, with the value a new interface
would get as the one to restore), then runs an ordinary apply, which finds all of that in place
and only adds what is vnet's own: its nftables tables, and a dnsmasq in place of the hand-made
one (stopped just before, its leases copied). Only then are the hand-made NAT rules deleted: from
the moment vnet's table is in, both translate the same way, so no packet goes untranslated. If the
apply fails, the marks come off again and the hand-made dnsmasq is started again.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from vnet import importer, names, spec
from vnet.drivers import netlink, process, rtnl, sysctl
from vnet.drivers import ns as nsmod
from vnet.drivers.ns import Namespace, Namespaces
from vnet.engine import DEFAULT_STATE_DIR, require_net_admin
from vnet.errors import VnetError
from vnet.importer import Host
from vnet.kinds import netns as netns_kind
from vnet.kinds.address import ADDRESS_KINDS
from vnet.resources import Resource, ns_key

IFLA_LINK, IFLA_LINK_NETNSID = 5, 37
RTM_GETNSID, NETNSA_NSID, NETNSA_FD = 90, 1, 3
NLMSG_ERROR = 2


# ------------------------------------------------------------------------------------------------
# reading the host


def _peer_info(ns: Namespace) -> dict[int, tuple[int | None, int | None]]:
    """ifindex → (IFLA_LINK, IFLA_LINK_NETNSID) of every link, from one raw dump."""
    out = {}
    for msg in ns.nl.dump(rtnl.RTM_GETLINK, rtnl.ifinfo()):
        index = struct.unpack_from("=i", msg, 20)[0]
        link = nsid = None
        for kind, v in rtnl.attrs(msg, 32, len(msg)):
            if kind == IFLA_LINK:
                link = struct.unpack_from("=I", v)[0]
            elif kind == IFLA_LINK_NETNSID:
                nsid = struct.unpack_from("=i", v)[0]
        out[index] = (link, nsid)
    return out


def _nsid_of(ns: Namespace, name: str) -> int | None:
    """The id `ns` knows the named namespace by (None when it has given it none)."""
    try:
        fd = os.open(nsmod.NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        nl = ns.nl
        seq = nl._send(RTM_GETNSID, rtnl.F_ACK, struct.pack("=Bxxx", socket.AF_UNSPEC) + rtnl.a_u32(NETNSA_FD, fd))
        for t, _, s, msg in nl._messages():
            if s != seq:
                continue
            if t == NLMSG_ERROR:
                return None
            for kind, v in rtnl.attrs(msg, 20, len(msg)):
                if kind == NETNSA_NSID:
                    nsid = struct.unpack_from("=i", v)[0]
                    return nsid if nsid >= 0 else None
            return None
    finally:
        os.close(fd)
    return None


def _read_ns_links(ns: Namespace) -> tuple[dict[str, importer.Link], dict[int, str], dict[int, tuple[int | None, int | None]]]:
    links = ns.nl.links()
    by_index = {li.index: li.ifname for li in links}
    peers = _peer_info(ns)
    out = {}
    for li in links:
        tun = netlink.tun_attrs(li.data) if li.kind == "tun" else {}
        out[li.ifname] = importer.Link(
            name=li.ifname, kind=li.kind, master=by_index.get(li.master) if li.master else None, mac=li.mac, mtu=li.mtu, up=li.up,
            alias=li.alias, tun_mode=tun.get("mode"), owner=tun.get("owner"), group=tun.get("group"))
    return out, by_index, peers


def _addrs(ns: Namespace, by_index: dict[int, str]) -> list[importer.Addr]:
    # an IPv6 link-local address is the kernel's, made with every link: nobody built it by hand
    return [importer.Addr(by_index.get(a.index, "?"), f"{a.address}/{a.prefixlen}", a.proto) for a in ns.nl.addrs()
            if not str(a.address).lower().startswith("fe80:")]


def _routes(ns: Namespace, by_index: dict[int, str]) -> list[importer.Route]:
    return [importer.Route("default" if not rt.dst_len else f"{rt.dst}/{rt.dst_len}", by_index.get(rt.oif or 0), rt.gateway, rt.proto, rt.scope)
            for rt in ns.nl.routes(table=rtnl.RT_TABLE_MAIN) if rt.type == rtnl.RTN_UNICAST]


def _dnsmasqs(target: str | None) -> list[importer.Dnsmasq]:
    """dnsmasq processes in the target namespace that vnet did not start."""
    out = []
    for pid in nsmod.pids_in(target):
        p = Path(f"/proc/{pid}")
        try:
            if (p / "comm").read_text().strip() != "dnsmasq":
                continue
            argv = (p / "cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
        except OSError:
            continue
        config = ""
        for k, v in importer.dnsmasq_options(argv, ""):
            if k == "conf-file" and v:
                try:
                    config = Path(v).read_text()
                except OSError:
                    pass
        if config.startswith(f"# {names.MARK}:"):
            continue  # vnet's own
        out.append(importer.Dnsmasq(int(p.name), argv, config))
    return out


def read_host(netns: str | None = None) -> Host:
    """What is on the target namespace, as importer.Host."""
    host = Host()
    nss = Namespaces(netns)
    try:
        ns = nss.host
        host.links, by_index, peers = _read_ns_links(ns)
        host.addrs = _addrs(ns, by_index)
        host.routes = _routes(ns, by_index)
        # which named namespace each veth leads into: ask the target for the id of each name,
        # stopping once every id its veths name is known
        wanted = {nsid: idx for idx, (_, nsid) in peers.items() if nsid is not None and nsid >= 0}
        names_of: dict[int, str] = {}
        if wanted:
            for name in nsmod.listed():
                if name == netns:
                    continue
                nsid = _nsid_of(ns, name)
                if nsid is not None and nsid in wanted:
                    names_of[nsid] = name
                    if len(names_of) == len(set(wanted)):
                        break
        for idx, (peer_index, nsid) in peers.items():
            name = by_index.get(idx)
            li = host.links.get(name or "")
            if li is None or li.kind != "veth" or nsid is None or nsid not in names_of:
                continue
            pname = names_of[nsid]
            if pname not in host.namespaces:
                pns = nss.get(pname)
                plinks, pidx, _ = _read_ns_links(pns)
                host.namespaces[pname] = importer.Netns(pname, plinks, _addrs(pns, pidx), _routes(pns, pidx),
                                                        plinks["lo"].alias if "lo" in plinks else None)
            pns_links = host.namespaces[pname].links
            li.peer_ns = pname
            li.peer = next((n for n, pl in pns_links.items() if _index_of(nss.get(pname), n) == peer_index), None)
        host.iptables = ns.run(["iptables-save"], check=False).stdout if shutil.which("iptables-save") else ""
        proc = ns.run(["nft", "-j", "list", "ruleset"], check=False)
        try:
            host.nft = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else {}
        except ValueError:
            host.nft = {}

        def switches() -> tuple[dict[str, str], str]:
            out = {}
            for conf in Path("/proc/sys/net/ipv4/conf").iterdir():
                try:
                    out[conf.name] = (conf / "forwarding").read_text().strip()
                except OSError:
                    pass
            return out, Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()

        host.forwarding, host.ip_forward = ns.call(switches)
        host.dnsmasq = _dnsmasqs(netns)
        ids = {li.owner for li in host.links.values() if li.owner is not None}
        gids = {li.group for li in host.links.values() if li.group is not None}
        for uid in ids:
            try:
                host.users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                pass
        for gid in gids:
            try:
                host.groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                pass
    finally:
        nss.close()
    return host


def _index_of(ns: Namespace, name: str) -> int | None:
    return netlink.index_of(ns, name)


def import_host(netns: str | None = None, name: str = "imported") -> importer.Imported:
    """`vnet import`: the topology of what is on the target namespace."""
    return importer.analyse(read_host(netns), name)


# ------------------------------------------------------------------------------------------------
# adopting


@dataclass
class Marked:
    """What adopt changed before the apply, to take it back if the apply fails."""

    aliases: list[tuple[str, str, str | None]] = field(default_factory=list)  # (ns, ifname, alias before)
    addresses: list[tuple[str, str, str, int, int]] = field(default_factory=list)  # (ns, ifname, ip, prefixlen, proto before)
    routes: list[tuple[str, str, str, int]] = field(default_factory=list)  # (ns, ifname, gateway, proto before)
    namespaces: list[str] = field(default_factory=list)
    sysctls: list[str] = field(default_factory=list)
    stopped: list[importer.Dnsmasq] = field(default_factory=list)


@dataclass
class Adopted:
    topology: str
    marked: int
    actions: list[str]
    removed_rules: list[str]
    stopped: list[int]


def _set_alias(nss: Namespaces, nsname: str, ifname: str, alias: str, m: Marked) -> None:
    ns = nss.get(nsname)
    link = ns.nl.link(ifname)
    if link is None:
        raise VnetError(f"interface {ifname} not found in {ns.label}")
    if link.alias == alias:
        return
    if link.alias and link.alias.startswith(f"{names.MARK}:"):
        raise VnetError(f"interface {ifname} in {ns.label} is vnet's already ({link.alias}); adopt takes over only what vnet did not make")
    ns.nl.request(*rtnl.set_link(link.index, alias=alias))
    m.aliases.append((nsname, ifname, link.alias))


def _mark_address(nss: Namespaces, r: Resource, m: Marked) -> None:
    ns = nss.get(r.get("ns"))
    idx = netlink.index_of(ns, r.get("ifname"))
    if idx is None:
        return
    for a in ns.nl.addrs(idx):
        if a.address == r.get("address") and a.prefixlen == r.get("prefixlen") and a.proto != names.ROUTE_PROTO:
            t, flags, body = rtnl.add_addr(idx, a.address, a.prefixlen, proto=names.ROUTE_PROTO, broadcast=a.broadcast, local=a.local)
            ns.nl.request(t, (flags & ~rtnl.F_EXCL) | rtnl.F_REPLACE, body)  # in place: the address never goes away
            m.addresses.append((r.get("ns"), r.get("ifname"), a.address, a.prefixlen, a.proto))


def _mark_route(nss: Namespaces, r: Resource, m: Marked) -> None:
    if r.get("dst") != "default":
        return
    ns = nss.get(r.get("ns"))
    idx = netlink.index_of(ns, r.get("ifname"))
    if idx is None:
        return
    for rt in ns.nl.routes(table=rtnl.RT_TABLE_MAIN):
        if rt.dst_len == 0 and rt.gateway == r.get("gateway") and rt.oif == idx and rt.proto != names.ROUTE_PROTO:
            ns.nl.request(*rtnl.add_route("0.0.0.0", 0, oif=idx, gateway=rt.gateway, proto=names.ROUTE_PROTO, priority=rt.priority,
                                          replace=True))
            m.routes.append((r.get("ns"), r.get("ifname"), rt.gateway, rt.proto))


def _unmark(nss: Namespaces, m: Marked, state: Path, record: sysctl.SysctlRecord) -> None:
    """Put back what adopt marked (best effort: it runs after a failure)."""
    for nsname, ifname, alias in reversed(m.aliases):
        try:
            nss.get(nsname).nl.request(*rtnl.set_link(ifname=ifname, alias=alias or ""))
        except Exception:
            pass
    for nsname, ifname, ip, plen, proto in m.addresses:
        try:
            ns = nss.get(nsname)
            idx = netlink.index_of(ns, ifname)
            t, flags, body = rtnl.add_addr(idx, ip, plen, proto=proto)
            ns.nl.request(t, (flags & ~rtnl.F_EXCL) | rtnl.F_REPLACE, body)
        except Exception:
            pass
    for nsname, ifname, gw, proto in m.routes:
        try:
            ns = nss.get(nsname)
            ns.nl.request(*rtnl.add_route("0.0.0.0", 0, oif=netlink.index_of(ns, ifname), gateway=gw, proto=proto, replace=True))
        except Exception:
            pass
    for name in m.namespaces:
        netns_kind.record(state, name, keep=False)
    if m.sysctls:
        data = record.load()
        for key in m.sysctls:
            data.pop(key, None)
        record.save(data)
    for d in m.stopped:  # the hand-made dnsmasq, as it was started
        try:
            subprocess.Popen(nss.host.argv(d.argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        except Exception:
            pass


def _delete_rules(ns: Namespace, foreign: importer.Foreign) -> list[str]:
    """The hand-made NAT rules vnet's table now does the work of; nft chains and tables they
    leave empty, and an iptables-nft table left with nothing in it, go too."""
    done = []
    for r in foreign.rules:
        if r.source == "iptables":
            argv = ["iptables", "-t", r.table, "-D", *importer.shlex.split(r.text)[1:]]
            proc = ns.run(argv, check=False)
            if proc.returncode == 0:
                done.append(r.text)
        else:
            family, table = r.table.split(" ", 1)
            proc = ns.run(["nft", "delete", "rule", family, table, r.chain, "handle", str(r.handle)], check=False)
            if proc.returncode == 0:
                done.append(r.text)
    # nft: chains this emptied, then tables left with nothing
    for key, info in foreign.nft_tables.items():
        family, table = key.split(" ", 1)
        gone = [r for r in foreign.rules if r.source == "nft" and r.table == key]
        left = {c: n - sum(1 for r in gone if r.chain == c) for c, n in info["chains"].items()}
        for c, n in left.items():
            if n == 0:
                ns.run(["nft", "delete", "chain", family, table, c], check=False)
        if all(n == 0 for n in left.values()) and not info["sets"]:
            ns.run(["nft", "delete", "table", family, table], check=False)
    # iptables-nft: a table whose chains are all empty, builtin and ACCEPT is as if absent
    for table in sorted({r.table for r in foreign.rules if r.source == "iptables"}):
        text = ns.run(["iptables-save", "-t", table], check=False).stdout
        lines = [x for x in text.splitlines() if x and not x.startswith("#")]
        chains = [x for x in lines if x.startswith(":")]
        if "nf_tables" in ns.run(["iptables", "-V"], check=False).stdout and not any(x.startswith("-A") for x in lines) \
                and all(x.split()[1] == "ACCEPT" for x in chains):
            ns.run(["nft", "delete", "table", "ip", table], check=False)
    return done


def adopt(path: Path | str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR) -> Adopted:
    """Take over what `path` (written by `vnet import`) describes, as it is on the host."""
    from vnet import api
    from vnet.desired import desired
    from vnet.dnsconf import files as dns_files

    require_net_admin("adopt")
    topo = spec.load(path)
    eng = api.engine(topo.name, netns, state_dir)
    m = Marked()
    with Namespaces(netns) as nss:
        obs = eng.observe(nss, topo)
        if obs.owned:
            raise VnetError(f"topology {topo.name} already has objects here: adopt is for what vnet did not make (use `vnet apply`)")
        facts = eng.facts(topo, obs, nss)
        want = desired(topo, facts)
        current = read_host(netns)
        found = importer.analyse(current, topo.name)
        # the analysis by bridge name: the networks of the file, whatever they are called in it
        by_bridge = {net["bridge"]: n for n, net in found.topology["networks"].items()}
        bridge_of = {n: r.key for r in want if r.kind == "bridge" for n in [r.get("mark").split(":")[3]]}
        try:
            for r in sorted(want, key=lambda r: ["netns", "bridge", "tap", "veth"].index(r.kind) if r.kind in ("netns", "bridge", "tap", "veth") else 9):
                if r.kind == "netns" and nsmod.exists(r.key):
                    if not r.key.startswith(f"{topo.name}-"):
                        netns_kind.record(eng.state, r.key)
                        m.namespaces.append(r.key)
                    _set_alias(nss, r.key, "lo", r.get("mark"), m)
                elif r.kind == "bridge" and r.key in obs.links:
                    _set_alias(nss, "", r.key, r.get("mark"), m)
                    if r.get("mac") and obs.links[r.key].mac == r.get("mac"):
                        # pinned: a bridge that chose its MAC from its ports keeps this one now
                        nss.host.nl.request(*rtnl.set_link(ifname=r.key, mac=r.get("mac")))
                elif r.kind == "tap" and r.key in obs.links:
                    _set_alias(nss, "", r.key, r.get("mark"), m)
                elif r.kind == "veth" and r.key in obs.links:
                    _set_alias(nss, "", r.key, r.get("mark"), m)
                    if r.get("peer_ns") and nsmod.exists(r.get("peer_ns")) and nss.get(r.get("peer_ns")).nl.link(r.get("peer_name")):
                        _set_alias(nss, r.get("peer_ns"), r.get("peer_name"), r.get("peer_mark"), m)
                elif r.kind in ADDRESS_KINDS:
                    _mark_address(nss, r, m)
                elif r.kind == "route":
                    _mark_route(nss, r, m)
                elif r.kind in ("sysctl", "ifsysctl"):
                    _record_sysctl(nss, eng.record, r, m)
            # dnsmasq: the hand-made one stops, its leases move to vnet's, vnet's starts (in the apply)
            for r in want:
                if r.kind != "service":
                    continue
                net_name = r.get("network")
                found_net = by_bridge.get(bridge_of.get(net_name, ""))
                d = found.foreign.dnsmasq.get(found_net or "")
                if d is None:
                    continue
                leases = found.foreign.leasefiles.get(found_net or "")
                text = Path(leases).read_bytes() if leases and Path(leases).exists() else b""
                process.stop_pids([d.pid])
                m.stopped.append(d)
                target = dns_files(eng.state, net_name)["leases"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(text)
            actions = api.apply(topo, netns=netns, state_dir=state_dir, source=path)
        except BaseException:
            _unmark(nss, m, eng.state, eng.record)
            raise
        removed = _delete_rules(nss.host, found.foreign) if found.foreign.rules else []
    marked = len(m.aliases) + len(m.addresses) + len(m.routes) + len(m.sysctls)
    return Adopted(topo.name, marked, [a.describe() for a in actions], removed, [d.pid for d in m.stopped])


def _record_sysctl(nss: Namespaces, record: sysctl.SysctlRecord, r: Resource, m: Marked) -> None:
    """A forwarding switch already as the topology wants it: vnet owns it from now on, and puts
    back on destroy what a new interface would get (conf/default), not the hand-made value."""
    ns = nss.get(r.get("ns"))
    path = r.get("path")
    if ns.call(sysctl.read, path) != r.get("value"):
        return  # the apply records what it finds and sets it
    parts = path.split("/")
    before = ns.call(sysctl.read, "/".join([*parts[:3], "default", parts[4]]))
    if before is None:
        return
    data = record.load()
    key = ns_key(r.get("ns"), path)
    if key in data:
        return
    data[key] = {"ns": r.get("ns"), "path": path, "before": before}
    record.save(data)
    m.sysctls.append(key)
