"""DHCP, DNS and IPv6 router advertisements: one supervised dnsmasq per network that asks for any. On an isolated network,
whose bridge has no host address, it runs in a small namespace of its own attached to the bridge."""

from __future__ import annotations

from pathlib import Path

from vnet import dnsconf, names, overlay, snoop
from vnet.drivers import dnsmasq, process
from vnet.errors import VnetError
from vnet.facts import HostFacts, bridge_name
from vnet.kinds.address import address
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make, ns_key
from vnet.spec.models import Topology
from vnet.spec.validate import addressing, addressing6, wants_service

HOST = ""


class Service(Kind):
    name = "service"
    after = ("sysctl", "address", "bridge_address", "dhcp_script")  # binds to addresses that exist; runs its lease script
    create_batch = "daemons"  # each dnsmasq's start-up is mostly its own waiting: they overlap

    def starts_after_for(self, r: Resource) -> tuple[str, ...] | None:
        """A dnsmasq on its bridge binds to the bridge's own address and runs its lease script (which
        adds to the ruleset's set): it starts once those exist, while the endpoints' links are
        made (10 dnsmasq at 1000 endpoints: ~80 ms of a fresh apply off its critical path). One in a
        namespace of its own needs that namespace's link, address and route as well. One that sends
        router advertisements waits as before for the switches that must be set before the first
        one arrives (an endpoint's autoconf off beside a fixed address6, accept_ra off on the bridge)."""
        if dnsconf.advertises_routers(r.get("config") or ""):
            return None
        return ("address", "route", "dhcp_script") if r.get("ns") else ("bridge_address", "dhcp_script")

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        out: list[Resource] = []
        t = topo.name
        for net_name, net in topo.networks.items():
            if not wants_service(topo, net_name):
                continue
            served_by = overlay.dhcp_host(topo, net_name) if facts.host else None
            if served_by is not None and served_by != facts.host:
                continue  # an overlay network is served by one host for all
            addr = addressing(topo, net_name)
            if net.mode == "isolated" or served_by is not None:
                # a namespace of its own on the bridge: an isolated network's bridge has no
                # address, and an overlay network's gateway address is on every host
                ns = names.service_netns(t, net_name)
                out.append(make("netns", ns, mark=names.netns_mark(t, f"svc-{net_name}", facts.target)))
                out.append(
                    make(
                        "veth",
                        names.veth_host(t, f"svc-{net_name}"),
                        mark=names.link_mark(t, "veth", f"svc-{net_name}", ns),
                        master=bridge_name(topo, net_name),
                        mac=names.local_mac(t, net_name, "svc-host"),
                        peer_ns=ns,
                        peer_name="eth0",
                        peer_mac=names.local_mac(t, net_name, "svc"),
                        peer_mark=names.link_mark(t, "veth-peer", f"svc-{net_name}"),
                        mtu=net.mtu,
                    )
                )
                out.append(address(ns, "eth0", f"{addr.service}/{addr.subnet.prefixlen}"))
                addr6 = addressing6(topo, net_name)
                if addr6.service is not None and addr6.subnet is not None:
                    out.append(address(ns, "eth0", f"{addr6.service}/{addr6.subnet.prefixlen}"))
                if addr.gateway is not None:  # DNS forwards upstream through this host's gateway
                    out.append(make("route", ns_key(ns, "default"), ns=ns, dst="default", gateway=str(addr.gateway), ifname="eth0"))
                ifname = "eth0"
            else:
                ns, ifname = HOST, bridge_name(topo, net_name)
            # the whole topology where this host builds its part: DNS and DHCP serve every host's
            config = dnsconf.render(facts.whole or topo, net_name, ifname, ns, list(facts.resolvers), facts.state)
            out.append(make("service", f"dnsmasq-{net_name}", {"config": config}, network=net_name, ns=ns, digest=dnsmasq.digest(config)))
        return out

    def observe(self, view, obs) -> None:
        for r in dnsmasq.observe(view.state):
            obs.add(r)

    def create(self, ctx: Ctx, r: Resource) -> None:
        self.create_many(ctx, [r])

    def create_many(self, ctx: Ctx, rs: list[Resource]) -> None:
        if ctx.undoing:
            for r in rs:
                restorable(r.get("config"), snoop.script_path(ctx.state, r.get("network")))
        dnsmasq.create_many(ctx.nss, ctx.state, rs)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        dnsmasq.delete(ctx.nss, ctx.state, r)

    def sweep(self, ctx: Ctx, r: Resource, obs) -> None:
        # started, but killed before its pid file was read back: find it by its config path
        process.kill_named(str(dnsconf.files(ctx.state, r.get("network"))["conf"]))


# dnsmasq options that run a program or read more configuration: never in a config that vnet puts
# back from its records (undo, recovery), which it reads from the state directory
_UNSAFE = ("dhcp-script", "dhcp-luascript", "script-arp", "conf-file", "conf-dir", "conf-script", "servers-file", "user", "group")


def restorable(config: str | None, own_script: Path) -> str:
    """`config`, if it is fit to restart dnsmasq from: the only program it may name is vnet's own
    lease script (which vnet writes itself, never from a record)."""
    for line in (config or "").splitlines():
        key, _, value = line.partition("=")
        key = key.strip()
        if key == "dhcp-script" and value.strip() == str(own_script):
            continue
        if key in _UNSAFE:
            raise VnetError(f"refusing to restart dnsmasq from a recorded config that sets {key}: run `vnet apply` to start it from the topology")
    return config or ""


KINDS = (Service(),)
