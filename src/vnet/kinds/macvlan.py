"""macvlan endpoints: an interface with a MAC of its own on a host NIC (`uplink:`), born in the
endpoint's namespace (IFLA_NET_NS_FD, as veth peers are), so the namespace sits on the NIC's LAN
directly — no bridge, no NAT. Modes: bridge (macvlans of the NIC reach each other inside the
host), private (never), vepa (only through the switch, which must hairpin).

Nothing of it is left in the target namespace, so ownership is the mark on the macvlan itself
(its ifalias, naming the uplink); the namespace it lives in is recorded in the state directory
too, so a borrowed namespace is found again without the topology (destroy)."""

from __future__ import annotations

import os
from pathlib import Path

from vnet import libdir, names
from vnet.drivers import ns as nsmod
from vnet.drivers import rtnl
from vnet.drivers.rtnl import RtnlError
from vnet.errors import VnetError
from vnet.facts import HostFacts, guest_mac
from vnet.kinds.address import address, observed_addresses
from vnet.kinds.base import Ctx, Kind
from vnet.kinds.route import observed_routes
from vnet.resources import Resource, make, ns_key
from vnet.spec.models import MacvlanSpec, Topology

MODES = {v: k for k, v in rtnl.MACVLAN_MODES.items()}


def _record(state: Path, endpoint: str) -> Path:
    return state / f"macvlan-{endpoint}.netns"


class Macvlan(Kind):
    name = "macvlan"
    reads_namespaces = True  # its links live in namespaces
    after = ("netns",)

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        out: list[Resource] = []
        t = topo.name
        for ep_name, ep in topo.endpoints.items():
            if not isinstance(ep, MacvlanSpec):
                continue
            ns = names.endpoint_netns(t, ep_name, ep.netns)
            if ep.netns is None:
                out.append(make("netns", ns, mark=names.netns_mark(t, ep_name, facts.target)))
            out.append(make("macvlan", ns, ns=ns, ifname=ep.ifname, uplink=ep.uplink, mode=ep.mode,
                            mac=guest_mac(topo, ep_name), mark=names.link_mark(t, "macvlan", ep_name, ep.uplink)))
            if ep.address:
                out.append(address(ns, ep.ifname, ep.address))
                if ep.gateway:
                    out.append(make("route", ns_key(ns, "default"), ns=ns, dst="default", gateway=ep.gateway, ifname=ep.ifname))
        return out

    def observe(self, view, obs) -> None:
        recorded = {}
        for rec in libdir.named(view.state, "macvlan-", ".netns"):
            try:
                recorded[rec.read_text().strip()] = True
            except OSError:
                pass
        for ns in sorted(set(obs.namespaces) | set(recorded)):
            if not view.exists(ns):
                continue
            for li in view.links(ns).values():
                if not li.mark or li.mark[:2] != (view.topology, "macvlan") or li.kind != "macvlan":
                    continue
                uplink = li.mark[3][0] if li.mark[3] else None
                obs.add(make("macvlan", ns, ns=ns, ifname=li.name, uplink=uplink, mac=li.mac, mark=view.alias(li),
                             mode=MODES.get(li.data.get("IFLA_MACVLAN_MODE"), "?")))
                for r in observed_addresses(view.addresses(ns), ns, li.name, li.index):
                    obs.add(r)
                for r in observed_routes(view.routes(ns), ns, {li.index: li.name}):
                    obs.add(r)

    def namespaces(self, r: Resource) -> tuple[str, ...]:
        return (r.get("ns"),)

    def create(self, ctx: Ctx, r: Resource) -> None:
        host, ns_name, ifname = ctx.nss.host, r.get("ns"), r.get("ifname")
        lower = host.nl.link(r.get("uplink"))
        if lower is None:
            raise VnetError(f"macvlan endpoint in {ns_name}: uplink {r.get('uplink')} not found in {host.label}; "
                            "name an interface of the host in uplink:")
        endpoint = names.parse_mark(r.get("mark"))[2]
        _record(ctx.state, endpoint).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _record(ctx.state, endpoint).write_text(ns_name + "\n")
        inner = ctx.nss.get(ns_name)
        fd = os.open(nsmod.NETNS_DIR / ns_name, os.O_RDONLY | os.O_CLOEXEC)
        try:
            host.nl.request(*rtnl.new_macvlan(ifname, lower.index, r.get("mode"), fd, mac=r.get("mac")))
        except RtnlError as exc:
            raise VnetError(f"cannot make macvlan {ifname} in {ns_name} on {r.get('uplink')}: {exc}") from None
        finally:
            os.close(fd)
        inner.indexes.clear()
        try:
            inner.nl.request(*rtnl.set_link(ifname=ifname, alias=r.get("mark"), up=True))
        except BaseException:
            self._remove(ctx, r)
            raise

    def _remove(self, ctx: Ctx, r: Resource) -> None:
        ns_name = r.get("ns")
        if not nsmod.exists(ns_name):
            return
        inner = ctx.nss.get(ns_name)
        inner.indexes.clear()
        try:
            inner.nl.request(*rtnl.del_link(ifname=r.get("ifname")))
        except RtnlError as exc:
            if exc.code != 19:  # ENODEV: gone already
                raise

    def delete(self, ctx: Ctx, r: Resource) -> None:
        inner = ctx.nss.get(r.get("ns")) if nsmod.exists(r.get("ns")) else None
        link = inner.nl.link(r.get("ifname")) if inner else None
        if link is not None and link.alias == r.get("mark"):
            self._remove(ctx, r)
        mark = names.parse_mark(r.get("mark"))
        if mark:
            _record(ctx.state, mark[2]).unlink(missing_ok=True)

    def update(self, ctx: Ctx, old: Resource, new: Resource) -> None:
        self.delete(ctx, old)
        self.create(ctx, new)

    def sweep(self, ctx: Ctx, r: Resource, obs) -> None:
        # made but killed before its mark: an unmarked macvlan of that name in the namespace
        if r.id in obs.owned or not nsmod.exists(r.get("ns")):
            return
        link = ctx.nss.get(r.get("ns")).nl.link(r.get("ifname"))
        if link is not None and not link.alias and link.kind == "macvlan":
            self._remove(ctx, r)


KINDS = (Macvlan(),)
