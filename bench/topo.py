"""Topologies the benchmark builds, generated in Python and loaded through vnet's own validator."""

from __future__ import annotations

import yaml

from vnet import spec
from vnet.spec.models import Topology

NETWORKS = 10
UPLINK = "eth0"  # the sandbox host's NIC


def networks_for(n: int) -> int:
    """10 networks up to N = 1000, then one per 100 endpoints (N = 10,000: 100 networks)."""
    return max(NETWORKS, -(-n // 100))


def build_dict(n: int, name: str = "bn") -> dict:
    """N endpoints over nat networks with DHCP (networks_for(n) of them): half taps, half netns
    endpoints with addresses."""
    nets = networks_for(n)
    if nets > 250:
        raise ValueError("the benchmark's topologies number their networks 10.77.0–249.0/24")
    networks = {}
    for i in range(nets):
        networks[f"n{i}"] = {"mode": "nat", "subnet": f"10.77.{i}.0/24", "uplink": UPLINK, "dhcp": True}
    endpoints = {}
    for k in range(n):
        net = k % nets
        host = 10 + k // nets  # ≤ 109 at N = 1000 and at N = 10,000
        if k % 2 == 0:
            endpoints[f"t{k}"] = {"kind": "tap", "network": f"n{net}"}
        else:
            endpoints[f"c{k}"] = {"kind": "netns", "network": f"n{net}", "address": f"10.77.{net}.{host}/24"}
    return {"name": name, "networks": networks, "endpoints": endpoints}


def forwards_dict(count: int, name: str = "bnf", extra: bool = False) -> dict:
    """One nat network, a target endpoint and `count` TCP forwards to it, as ranges of ≤ 4096 ports
    from port 10000 (ranges keep their port numbers). `extra` adds one more single-port forward."""
    fwds = []
    lo, left = 10000, count
    while left > 0:
        span = min(4096, left)
        fwds.append({"proto": "tcp", "port": f"{lo}-{lo + span - 1}" if span > 1 else lo, "to": "web"})
        lo += span
        left -= span
    if extra:
        fwds.append({"proto": "tcp", "port": EXTRA_PORT, "to": "web"})
    return {
        "name": name,
        "networks": {"lan": {"mode": "nat", "subnet": "10.78.0.0/24", "uplink": UPLINK, "forwards": fwds}},
        "endpoints": {"web": {"kind": "netns", "network": "lan", "address": WEB_ADDR + "/24"}},
    }


def dhcp_dict(name: str = "bnd", endpoint: bool = False) -> dict:
    """One nat network with DHCP (libvirt's default network, as vnet writes it); `endpoint` adds
    one netns endpoint without an address, whose namespace the benchmark asks for a lease from."""
    d: dict = {"name": name, "networks": {"lan": {"mode": "nat", "subnet": "10.80.0.0/24", "uplink": UPLINK, "dhcp": True}}}
    if endpoint:
        d["endpoints"] = {"c": {"kind": "netns", "network": "lan"}}
    return d


EXTRA_PORT = 40000
WEB_ADDR = "10.78.0.10"


def last_port(count: int) -> int:
    """The highest forwarded port of forwards_dict(count)."""
    return 10000 + count - 1


def to_yaml(d: dict) -> str:
    return yaml.safe_dump(d, sort_keys=False)


def load(d: dict) -> Topology:
    return spec.load_text(to_yaml(d))
