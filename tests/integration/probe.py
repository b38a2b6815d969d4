"""Probes that only vnet's firewall can stop, the controls that show they would get through without
it, and bounded waits.

An isolated network's endpoints have no route out and the host has no route in, so "the endpoint
cannot reach the host" holds with no firewall at all. `routed` takes that excuse away: the host
routes the subnet to the bridge and forwards on it and on its uplink (as a host running Docker
does), and each prober sends everything through the host's uplink address. `firewall_removed` is
the control: with vnet's nft tables deleted the same probes must get through, or the test proves
nothing."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from vnet import names, sandbox

from . import snapshot

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """condition()'s first truthy value, polled until `timeout` seconds; else fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(every)


def _ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True)


def _write_sysctl(ns: str, path: str, value: str) -> None:
    snapshot.inside(ns, lambda: (Path("/proc/sys") / path).write_text(value + "\n"))


def default_via_host(ns: str, dev: str = "eth0") -> None:
    """Give an endpoint namespace a default route through the host's uplink address."""
    _ip(ns, "route", "replace", "default", "via", sandbox.HOST_ADDR, "dev", dev, "onlink")


@contextmanager
def routed(host: str, bridge: str, subnet: str, endpoints: Iterable[str] = (), uplink: str = "eth0") -> Iterator[None]:
    """The host routes `subnet` to `bridge` and forwards between the bridge and its uplink; the
    endpoint namespaces route everything through the host. All of it is undone on exit."""
    keys = [f"net/ipv4/conf/{dev}/forwarding" for dev in (bridge, uplink)]
    old = {k: snapshot.sysctl(host, k) for k in keys}
    _ip(host, "route", "add", subnet, "dev", bridge)
    try:
        for k in keys:
            _write_sysctl(host, k, "1")
        for ns in endpoints:
            default_via_host(ns)
        yield
    finally:
        for ns in endpoints:
            subprocess.run(["ip", "-n", ns, "route", "del", "default"], capture_output=True)
        for k, v in old.items():
            subprocess.run(["ip", "netns", "exec", host, "sh", "-c", f"[ -e /proc/sys/{k} ] && echo {v} > /proc/sys/{k}"],
                           capture_output=True)
        subprocess.run(["ip", "-n", host, "route", "del", subnet, "dev", bridge], capture_output=True)


@contextmanager
def firewall_removed(world, topo) -> Iterator[None]:
    """The control case: vnet's nft tables of `topo` deleted by hand; apply puts them back on exit."""
    table = names.nft_table(topo.name)
    for family in ("inet", "bridge"):
        subprocess.run(["ip", "netns", "exec", world.host, "nft", "delete", "table", family, table], check=True)
    try:
        yield
    finally:
        world.apply(topo)
