"""DHCP and DNS served by vnet's supervised dnsmasq, proven with real clients in namespaces."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess

from vnet import api, check, dnsconf, sandbox, spec
from vnet.drivers import process
from vnet.drivers.ns import Namespace
from vnet.spec.models import NetnsSpec

from . import snapshot
from .conftest import EXAMPLES


def _nslookup(ns: str, name: str, server: str) -> str | None:
    proc = check.run_in(ns, ["busybox", "nslookup", "-type=a", name, server])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("Address") and ":53" not in line]
    return lines[-1].split()[-1] if proc.returncode == 0 and lines else None


def _pid(world, topo) -> int | None:
    f = dnsconf.files(world.topo_state(topo.name), "lan0")
    return process.running(f["pid"], marker=f["conf"])


def test_dhcp_dns_for_namespaces(world):
    topo = world.load("services.yaml")
    before = snapshot.take(world.host)
    # a resolver already listening on the host, as systemd-resolved does: vnet must coexist
    host = Namespace(world.host)

    def listen() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.53", 53))
        return s

    resolver = host.call(listen)
    try:
        world.apply(topo)
        leased = ipaddress.IPv4Interface(check.dhcp_client("svc-c2"))
        assert ipaddress.IPv4Address("192.168.60.100") <= leased.ip <= ipaddress.IPv4Address("192.168.60.150")
        assert check.ping("svc-c2", "192.168.60.10")
        assert _nslookup("svc-c2", "c1.svc.test", "192.168.60.1") == "192.168.60.10"
        assert _nslookup("svc-c2", "c2.svc.test", "192.168.60.1") == str(leased.ip)  # named by its lease
        assert _nslookup("svc-c2", "nas.svc.test", "192.168.60.1") == "192.168.60.5"
        assert _nslookup("svc-c2", sandbox.DNS_NAME, "192.168.60.1") == sandbox.WAN_ADDR  # forwarded upstream
        leases = api.leases(topo.name, state_dir=world.state, netns=world.host)
        assert [(x.name, x.address) for x in leases] == [("c2", str(leased.ip))]
        # dnsmasq listens on its bridge only: not on the uplink, not on the wildcard
        ss = subprocess.run(["ip", "netns", "exec", world.host, "ss", "-Hlnu"], capture_output=True, text=True).stdout
        assert "192.168.60.1:53" in ss and "192.0.2.2:53" not in ss and "0.0.0.0:53" not in ss
        assert check.tcp_line(world.sb.lan, "192.0.2.2", 53, timeout_s=1) is None
        assert "127.0.0.53:53" in ss  # the other resolver keeps its socket
        # a lease inside the endpoint is not vnet's: plan stays empty
        assert world.plan(topo).actions == []
    finally:
        resolver.close()
        host.close()
    world.destroy(topo.name)
    assert snapshot.take(world.host) == before


def test_crashed_dnsmasq_is_noticed_and_restarted_and_config_change_restarts(world, tmp_path):
    topo = world.load("services.yaml")
    world.apply(topo)
    pid = _pid(world, topo)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while _pid(world, topo) == pid:
        pass
    report = api.status(topo, netns=world.host, state_dir=world.state)
    assert not report["in_sync"]
    assert [r["state"] for r in report["resources"] if r["kind"] == "service"] == ["missing"]
    assert [a.op for a in world.plan(topo).actions] == ["create"]
    world.apply(topo)
    restarted = _pid(world, topo)
    assert restarted not in (None, pid)
    assert _nslookup("svc-c1", "c1.svc.test", "192.168.60.1") == "192.168.60.10"

    changed = tmp_path / "changed.yaml"
    changed.write_text((EXAMPLES / "services.yaml").read_text().replace("lease: 1h", "lease: 2h"))
    topo2 = spec.load(changed)
    actions = world.plan(topo2).actions
    assert [(a.op, a.resource.kind) for a in actions] == [("update", "service")]
    world.apply(topo2)
    assert _pid(world, topo2) not in (None, restarted)
    assert "1h" not in open(dnsconf.files(world.topo_state(topo.name), "lan0")["conf"]).read()
    world.destroy(topo.name)
    assert _pid(world, topo) is None


def test_isolated_network_served_from_its_own_namespace(world):
    # the isolated example's network, with a namespace standing in for the guests
    topo = world.load("isolated-guests.yaml").model_copy(
        update={"vms": {}, "endpoints": {"x": NetnsSpec(kind="netns", network="lab")}}
    )
    before = snapshot.take(world.host)
    world.apply(topo)
    leased = ipaddress.IPv4Interface(check.dhcp_client("iso-x"))
    assert leased.ip in ipaddress.IPv4Network("10.77.0.0/24")
    assert _nslookup("iso-x", "x.iso.test", "10.77.0.1") == str(leased.ip)
    assert not check.ping("iso-x", sandbox.HOST_ADDR)
    assert not [a for a in snapshot.take(world.host)["addresses"] if a[0] == "vb-iso-lab" and ":" not in a[1]]
    world.destroy(topo.name)
    assert snapshot.take(world.host) == before
