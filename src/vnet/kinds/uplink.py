"""Bridged mode: the physical NIC joins the bridge and hands it the host's addresses and routes.

Then the host must still reach its gateway: vnet asks it by ARP from the bridge, and if it does
not answer in time, takes the NIC out again and moves the addressing back on its own (the way
`netplan try` reverts), so a wrong uplink never costs the host its network.
"""

from __future__ import annotations

import ipaddress
import os
import select
import _socket  # not socket.py: ~3 ms of start-up (drivers/rtnl.py)
import struct
import time
from typing import Iterable

from vnet.drivers import netlink, rtnl
from vnet.drivers.ns import Namespace
from vnet.errors import VnetError
from vnet.facts import HostFacts, bridge_name
from vnet.kinds.base import Ctx, Kind
from vnet.resources import Resource, make
from vnet.spec.models import Topology

UPLINK_TIMEOUT = 5.0  # seconds the gateway has to answer after the uplink joined the bridge


class Uplink(Kind):
    name = "uplink"
    after = ("address",)

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        return [make("uplink", net.uplink, bridge=bridge_name(topo, n)) for n, net in topo.networks.items() if net.mode == "bridged"]

    def observe(self, view, obs) -> None:
        for br in [r for r in obs.owned.values() if r.kind == "bridge"]:
            li = obs.links.get(br.key)
            if li is None or li.mark is None or li.mark[3][:1] != ("bridged",):
                continue
            for port in obs.links.values():
                if port.master == li.name and not port.mark:
                    obs.add(make("uplink", port.name, bridge=li.name))

    def create(self, ctx: Ctx, r: Resource) -> None:
        if ctx.undoing:
            netlink.create_uplink(ctx.nss, r)
            return
        before = default_routes(ctx.nss.host)
        netlink.create_uplink(ctx.nss, r)
        verify(ctx, r, before)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        netlink.delete_uplink(ctx.nss, r)


def default_routes(ns: Namespace) -> list[tuple[str | None, int | None]]:
    """(gateway, oif) of the IPv4 default routes in the main table."""
    return [(rt.gateway, rt.oif) for rt in ns.nl.routes(table=rtnl.RT_TABLE_MAIN) if rt.dst_len == 0]


def arp_probe(ifname: str, src: str, target: str, timeout: float) -> bool:
    """True when `target` answers an ARP request sent from `ifname` within `timeout` seconds.
    Runs in the namespace's worker thread (a packet socket binds to that namespace's device)."""
    eth_p_arp = 0x0806
    s = _socket.socket(_socket.AF_PACKET, _socket.SOCK_RAW, _socket.htons(eth_p_arp))
    try:
        s.bind((ifname, eth_p_arp))
        mac = s.getsockname()[4]
        tpa = _socket.inet_aton(target)
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, _socket.inet_aton(src), b"\0" * 6, tpa)
        frame = (b"\xff" * 6 + mac + struct.pack("!H", eth_p_arp) + arp).ljust(60, b"\0")
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                return False
            if now >= next_send:
                s.send(frame)
                next_send = now + 0.5
            ready, _, _ = select.select([s], [], [], max(0.0, min(deadline, next_send) - now))
            if ready:
                data = s.recv(128)
                if len(data) >= 42 and data[12:14] == b"\x08\x06":
                    op, spa = struct.unpack("!H", data[20:22])[0], data[28:32]
                    if op == 2 and spa == tpa:
                        return True
    finally:
        s.close()


def _gateway_answers(ns: Namespace, routes: Iterable[tuple[str | None, int | None]], timeout: float) -> tuple[str, str, bool] | None:
    """(gateway, device, answered) for the first default route with a gateway, None without one."""
    for gateway, oif in routes:
        if gateway:
            dev = _ifname(ns, oif)
            return gateway, dev, ns.call(arp_probe, dev, _source_for(ns, oif, gateway), gateway, timeout)
    return None


def verify(ctx: Ctx, r: Resource, before: list[tuple[str | None, int | None]]) -> None:
    timeout = float(os.environ.get("VNET_UPLINK_TIMEOUT") or UPLINK_TIMEOUT)
    ns = ctx.nss.host
    after = default_routes(ns)
    problem = None
    if before and not after:
        problem = "the host lost its default route"
    else:
        probe = _gateway_answers(ns, after, timeout)
        if probe is not None and not probe[2]:
            problem = f"the default gateway {probe[0]} did not answer ARP on {probe[1]} within {timeout:g}s"
    if problem is None:
        return
    netlink.delete_uplink(ctx.nss, r)  # put the NIC and the host's addressing back, now
    hint = ""
    probe = _gateway_answers(ns, default_routes(ns), 1.0)
    if probe is not None and not probe[2]:
        hint = f" (it does not answer on {probe[1]} either: check the gateway and the cable)"
    raise VnetError(f"uplink check failed after {r.key} joined {r.get('bridge')}: {problem}{hint}; {r.key} was taken out of the bridge and the host's addresses and routes moved back")


def _ifname(ns: Namespace, index: int | None) -> str:
    link = ns.nl.link_by_index(index) if index else None
    return link.ifname if link else f"#{index}"


def _source_for(ns: Namespace, oif: int, gateway: str) -> str:
    gw = ipaddress.IPv4Address(gateway)
    for a in ns.nl.addrs(oif, family=rtnl.AF_INET):
        if gw in ipaddress.IPv4Interface(f"{a.address}/{a.prefixlen}").network:
            return a.address
    return "0.0.0.0"


KINDS = (Uplink(),)
