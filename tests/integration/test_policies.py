"""Port forwards, isolation between networks, anti-spoofing, port isolation and rate limits,
each proven with real traffic in a sandbox (examples/forwards.yaml)."""

from __future__ import annotations

import json
import subprocess

import pytest

from vnet import api, check, sandbox, spec
from vnet.errors import StepFailed

from . import snapshot
from .conftest import EXAMPLES

HOST = sandbox.HOST_ADDR
WAN = sandbox.WAN_ADDR


@pytest.fixture
def fwd(world):
    topo = world.load("forwards.yaml")
    world.apply(topo)
    return world, topo


def test_forwards_reach_the_right_endpoint_with_the_real_client_address(fwd):
    world, topo = fwd
    with check.Listener("fwd-web", 80), check.Listener("fwd-sink", 5005, udp=True), check.Listener("fwd-peer", 8081):
        # from the internet and from the LAN: the endpoint sees who really connected
        assert check.tcp_line(world.sb.wan, HOST, 8080) == WAN
        assert check.tcp_line(world.sb.lan, HOST, 8080) == sandbox.LAN_ROUTER
        assert check.udp_line(world.sb.wan, HOST, 5005) == WAN
        # a port nobody forwarded stays closed, even though something listens behind it
        assert check.tcp_line(world.sb.wan, HOST, 8081, timeout_s=1) is None
        assert check.udp_line(world.sb.wan, HOST, 5011, timeout_s=1) is None
        # from the host itself
        assert check.tcp_line(world.host, HOST, 8080) is not None
        # hairpin: another endpoint uses the host's public address
        assert check.tcp_line("fwd-peer", HOST, 8080) == "192.168.70.1"
    counters = {(f["proto"], f["port"]): f for f in api.status(topo, netns=world.host, state_dir=world.state)["forwards"]}
    assert counters[("tcp", 8080)]["packets"] > 0 and counters[("tcp", 8080)]["to"] == "192.168.70.10:80"
    assert counters[("udp", 5005)]["packets"] > 0
    assert counters[("udp", 5001)]["packets"] == 0


def test_networks_are_isolated_except_what_is_allowed(fwd):
    world, _ = fwd
    with check.Listener("fwd-back", 80), check.Listener("fwd-back", 81), check.Listener("fwd-peer", 80):
        assert check.tcp_line("fwd-peer", "192.168.71.10", 80) == "192.168.70.30"  # allowed
        assert check.tcp_line("fwd-peer", "192.168.71.10", 81, timeout_s=1) is None  # another port
        assert not check.ping("fwd-peer", "192.168.71.10")  # another protocol
        assert check.tcp_line("fwd-back", "192.168.70.30", 80, timeout_s=1) is None  # the other way


def test_spoofed_mac_or_address_gets_nothing_through(fwd):
    world, _ = fwd
    assert check.ping("fwd-peer", "192.168.70.1")
    assert check.ping("fwd-free", "192.168.70.1")
    for ns in ("fwd-peer", "fwd-free"):
        subprocess.run(["ip", "-n", ns, "addr", "add", "192.168.70.99/24", "dev", "eth0"], check=True)
    # another source address: dropped, unless the endpoint says spoofing: allow
    assert not _ping_from("fwd-peer", "192.168.70.99", "192.168.70.1")
    assert _ping_from("fwd-free", "192.168.70.99", "192.168.70.1")
    # another MAC: dropped
    subprocess.run(["ip", "-n", "fwd-peer", "link", "set", "eth0", "address", "52:54:00:66:66:66"], check=True)
    subprocess.run(["ip", "-n", "fwd-peer", "neigh", "flush", "all"], check=True)
    assert not check.ping("fwd-peer", "192.168.70.1")


def _ping_from(ns: str, source: str, target: str) -> bool:
    proc = check.run_in(ns, ["busybox", "ping", "-c", "1", "-W", "1", "-I", source, target])
    return proc.returncode == 0


def test_rogue_dhcp_server_on_an_endpoint_hands_out_nothing(fwd, tmp_path):
    world, _ = fwd
    rogue = subprocess.Popen(
        ["ip", "netns", "exec", "fwd-peer", "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
         "--interface=eth0", "--bind-interfaces", "--dhcp-range=192.168.70.200,192.168.70.210,1h",
         f"--dhcp-leasefile={tmp_path / 'rogue.leases'}", f"--pid-file={tmp_path / 'rogue.pid'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        check.run_in("fwd-web", ["ip", "addr", "flush", "dev", "eth0"])
        with pytest.raises(RuntimeError, match="no DHCP lease"):
            check.dhcp_client("fwd-web", tries=3)
        assert rogue.poll() is None  # it ran the whole time; its offers were dropped at the port
    finally:
        rogue.terminate()
        rogue.wait(timeout=5)


def test_isolated_port_reaches_only_the_gateway(fwd):
    world, _ = fwd
    assert check.ping("fwd-lone", "192.168.70.1")
    assert not check.ping("fwd-lone", "192.168.70.30")
    assert not check.ping("fwd-peer", "192.168.70.40")
    assert check.ping("fwd-lone", WAN)  # through the gateway it goes on as a nat endpoint
    assert check.ping("fwd-peer", "192.168.70.10")  # others are unaffected


def _iperf(world, reverse: bool) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", "fwd-slow", "iperf3", "-s", "-1", "-p", "5201"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if "5201" in check.run_in("fwd-slow", ["ss", "-Hltn"]).stdout:
                break
            subprocess.run(["sleep", "0.1"])
        argv = ["iperf3", "-c", "192.168.70.60", "-p", "5201", "-t", "4", "-O", "1", "-J"] + (["-R"] if reverse else [])
        out = check.run_in(world.host, argv, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]
    finally:
        server.kill()
        server.wait()


def test_rate_limit_holds_each_way(fwd):
    world, _ = fwd
    limit = 20e6
    down = _iperf(world, reverse=False)  # host → endpoint: shaped by tbf on the port
    up = _iperf(world, reverse=True)  # endpoint → host: policed at the bridge port
    print(f"\nrate 20mbit: to the endpoint {down / 1e6:.1f} Mbit/s, from it {up / 1e6:.1f} Mbit/s")
    assert abs(down - limit) / limit <= 0.10, down
    assert abs(up - limit) / limit <= 0.10, up


def test_adding_a_forward_changes_only_elements_and_rolls_back_exactly(fwd, tmp_path):
    world, topo = fwd
    with check.Listener("fwd-web", 80):
        assert check.tcp_line(world.sb.wan, HOST, 8080) == WAN
    counted = _counter(world, topo, "tcp", 8080)
    assert counted > 0
    before = snapshot.take(world.host)

    # one more forward, plus a new network whose forwarding sysctls come after the ruleset step
    text = (EXAMPLES / "forwards.yaml").read_text()
    text = text.replace('      - {proto: tcp, port: 8080, to: "web:80"}',
                        '      - {proto: tcp, port: 8080, to: "web:80"}\n      - {proto: tcp, port: 9090, to: "web:80"}')
    text = text.replace("  lan1:\n", "  lan2: {mode: nat, subnet: 192.168.72.0/24, uplink: eth0}\n  lan1:\n")
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(text)
    topo2 = spec.load(bigger)
    actions = world.plan(topo2).actions
    kinds = [(a.op, a.resource.kind) for a in actions]
    ruleset_step = kinds.index(("update", "ruleset")) + 1
    later = next(i for i, k in enumerate(kinds, 1) if i > ruleset_step)
    with pytest.raises(StepFailed):
        world.apply(topo2, fail_at=later)
    assert snapshot.take(world.host) == before  # elements put back exactly, counters included

    world.apply(topo2)
    assert world.plan(topo2).actions == []
    with check.Listener("fwd-web", 80):
        assert check.tcp_line(world.sb.wan, HOST, 9090) == WAN
    # the existing forward's counter survived: its element was not rewritten
    assert _counter(world, topo2, "tcp", 8080) >= counted


def _counter(world, topo, proto: str, port: int) -> int:
    rows = api.status(topo, netns=world.host, state_dir=world.state)["forwards"]
    return next(r["packets"] for r in rows if (r["proto"], r["port"]) == (proto, port))
