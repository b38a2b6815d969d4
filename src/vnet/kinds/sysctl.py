"""Forwarding sysctls, per interface (never the host-wide ip_forward), with the value found
before kept in the topology's record and put back on destroy — unless another topology in the
same namespace still needs it."""

from __future__ import annotations

from vnet.drivers import sysctl
from vnet.errors import VnetError
from vnet.facts import HostFacts, bridge_name, endpoint_netns, uplink_of
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make, ns_key
from vnet.spec.models import NetnsSpec, Topology

HOST = ""


class Sysctl(Kind):
    name = "sysctl"
    after = ("ruleset", "iptables")  # forwarding goes on once the firewall guards it
    create_batch = "sysctls"  # one write of the record of values found, not one per switch

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        # a nat network's bridge and uplink, and both bridges of an allowed pair (IPv4 asks the
        # input device)
        forwarding: list[str | None] = []
        for net_name, net in topo.networks.items():
            if net.mode == "nat":
                forwarding += [bridge_name(topo, net_name), uplink_of(topo, net_name, facts)]
        for rule in topo.allow:
            forwarding += [bridge_name(topo, rule.from_), bridge_name(topo, rule.to)]
        out = []
        for dev in dict.fromkeys(forwarding):
            path = f"net/ipv4/conf/{dev}/forwarding"
            out.append(make("sysctl", ns_key(HOST, path), ns=HOST, path=path, value="1"))
        for path, value in ipv6_paths(topo, facts):
            out.append(make("sysctl", ns_key(HOST, path), ns=HOST, path=path, value=value))
        return out

    def observe(self, view, obs) -> None:
        for r in sysctl.observe(view.nss, sysctl.SysctlRecord(view.state), host=True):
            obs.add(r)

    def create(self, ctx: Ctx, r: Resource) -> None:
        self.create_many(ctx, [r])

    def create_many(self, ctx: Ctx, rs: list[Resource]) -> None:
        with ctx.host_lock():
            try:
                sysctl.create_many(ctx.nss, ctx.record, rs)
            except sysctl.MissingSwitch as exc:
                if exc.path.endswith("/force_forwarding") and not ctx.undoing:
                    raise VnetError(
                        f"IPv6 forwarding per interface needs Linux 6.17 or later (net.ipv6.conf.<if>.force_forwarding); "
                        f"this kernel has no {exc.path} — remove subnet6 from nat networks and allowed pairs, "
                        "or use mode: host"
                    ) from None
                raise

    def update(self, ctx: Ctx, old: Resource, new: Resource) -> None:
        with ctx.host_lock():
            sysctl.update(ctx.nss, ctx.record, old, new)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        with ctx.host_lock():  # a forwarding switch may be shared with another topology
            if not still_needed(ctx, r):
                sysctl.delete(ctx.nss, ctx.record, r)


class EndpointSysctl(Sysctl):
    """A switch of an endpoint's own interface inside its namespace, set before its addresses and
    before any router advertisement reaches it (the host's switches wait for the firewall)."""

    name = "ifsysctl"
    after = ("veth",)
    create_batch = "ifsysctls"  # a batch of its own: a run is always of one kind

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        out = []
        for ep_name, ep in topo.endpoints.items():
            # a fixed address6 is the endpoint's one global address: a SLAAC address beside it
            # would win source selection as often as not, and the port's guard lets only the fixed
            # one out
            if isinstance(ep, NetnsSpec) and ep.address6 and topo.networks[ep.network].subnet6:
                ns, path = endpoint_netns(topo, ep_name), f"net/ipv6/conf/{ep.ifname}/autoconf"
                out.append(make(self.name, ns_key(ns, path), ns=ns, path=path, value="0"))
        return out

    def observe(self, view, obs) -> None:
        for r in sysctl.observe(view.nss, sysctl.SysctlRecord(view.state), host=False):
            obs.add(Resource(self.name, r.key, r.attrs, r.extra))


def ipv6_paths(topo: Topology, facts: HostFacts) -> list[tuple[str, str]]:
    """(path, value) of the IPv6 switches of a topology whose networks have subnet6.

    IPv6 decides differently from IPv4. An interface's `forwarding` forwards nothing while the
    host-wide switch is off; it only makes the interface act as a router, and switching it on for
    any one interface makes the kernel drop every default route learned from router
    advertisements on interfaces whose accept_ra is not 2 (the host's own uplink included, until
    the next advertisement). `force_forwarding` (Linux 6.17) forwards what arrives on that one
    interface and changes nothing else. So vnet switches `force_forwarding` on where IPv6 packets
    enter to be forwarded (a nat network's bridge, its uplink for replies and routed prefixes, both
    bridges of an allowed pair) and never touches `forwarding`: the uplink stays a host, with its
    accept_ra and its default route. What a router gets from `forwarding` on its own bridges —
    ignoring router advertisements from its guests — vnet gets from accept_ra 0 there."""
    entering: list[str | None] = []
    bridges: list[str] = []
    for net_name, net in topo.networks.items():
        if net.subnet6 and net.mode != "bridged":
            bridges.append(bridge_name(topo, net_name))
        if net.mode == "nat" and net.subnet6:
            entering += [bridge_name(topo, net_name), uplink_of(topo, net_name, facts)]
    for rule in topo.allow:
        pair = [n for n in (rule.from_, rule.to) if n in topo.networks]
        if len(pair) == 2 and all(topo.networks[n].subnet6 for n in pair):
            entering += [bridge_name(topo, n) for n in pair]
    out = [(f"net/ipv6/conf/{dev}/force_forwarding", "1") for dev in dict.fromkeys(entering) if dev]
    out += [(f"net/ipv6/conf/{dev}/accept_ra", "0") for dev in dict.fromkeys(bridges)]
    return out


def still_needed(ctx: Ctx, r: Resource) -> bool:
    """When another topology in the same namespace also set this sysctl, leave the value: that
    topology still needs it. Hand it the value found before this one changed it, if it recorded
    this one's value as its own "before", so the last one out restores the original."""
    if r.get("ns"):  # endpoint namespaces belong to one topology
        return False
    sharers = []
    for other, _ in ctx.others():
        rec = sysctl.SysctlRecord(ctx.state_root / other)
        entry = rec.load().get(r.key)
        if entry is not None:
            sharers.append((rec, entry))
    if not sharers:
        return False
    mine = ctx.record.load()
    entry = mine.pop(r.key, None)
    if entry is not None:
        for rec, theirs in sharers:
            if theirs["before"] == r.get("value") and theirs["before"] != entry["before"]:
                data = rec.load()
                data[r.key]["before"] = entry["before"]
                rec.save(data)
                break
    ctx.record.save(mine)
    ctx.log(f"{r.get('path')} stays as it is: another topology here needs it too")
    return True


KINDS = (Sysctl(), EndpointSysctl())
