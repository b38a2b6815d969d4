"""The in-namespace half of baseline (d), as one process: `python -m bench.nsconf WORK.json`.

An address or a route can only be made from inside its namespace; `ip -n NS -batch` does that with
a process per namespace, which is what (b) pays for. This process instead enters each namespace in
turn (setns(2)), opens one rtnetlink socket there and sends the same requests (`lo` and the peer
marked and up, the addresses, the routes), with the request encoders of vnet's netlink client and
nothing else of vnet: no engine, plan, journal or observation. First, in the host namespace, the
bridge ports' IPv6 is switched off before their peers come up, as vnet does (otherwise every port
adds a link-local address and three routes that the kernel walks on each later link event).

WORK.json: {"host": NS, "ports": [ifname, ...], "namespaces": {NS: [op, ...]}} with ops
["link", ifname, alias], ["addr", ifname, address, prefixlen], ["route", dst, gateway|null, ifname].
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys

from vnet.drivers import rtnl

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter(ns: str) -> None:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
    finally:
        os.close(fd)


def configure(ops: list[list]) -> None:
    nl = rtnl.Rtnl(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
    index: dict[str, int] = {}

    def idx(ifname: str) -> int:
        if ifname not in index:
            index[ifname] = nl.link(ifname).index  # type: ignore[union-attr]
        return index[ifname]

    try:
        for op in ops:
            if op[0] == "link":
                nl.request(*rtnl.set_link(ifname=op[1], alias=op[2], up=True))
            elif op[0] == "addr":
                nl.request(*rtnl.add_addr(idx(op[1]), op[2], op[3], proto=86))  # vnet's mark, as vnet adds them
            elif op[0] == "route":
                dst, gateway, ifname = op[1], op[2], op[3]
                net, _, plen = ((("::/0" if ":" in (gateway or "") else "0.0.0.0/0")) if dst == "default" else dst).partition("/")
                nl.request(*rtnl.add_route(net, int(plen), oif=idx(ifname), gateway=gateway, proto=86))
            else:
                raise ValueError(f"unknown op {op[0]}")
    finally:
        nl.close()


def main(path: str) -> None:
    work = json.loads(open(path).read())
    enter(work["host"])
    for port in work["ports"]:
        try:
            with open(f"/proc/sys/net/ipv6/conf/{port}/disable_ipv6", "w") as f:
                f.write("1\n")
        except FileNotFoundError:
            pass
    for ns, ops in work["namespaces"].items():
        enter(ns)
        configure(ops)


if __name__ == "__main__":
    main(sys.argv[1])
