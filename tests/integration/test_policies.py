"""Port forwards, isolation between networks, anti-spoofing, port isolation and rate limits,
each proven with real traffic in a sandbox (examples/forwards.yaml)."""

from __future__ import annotations

import json
import subprocess

import pytest

from vnet import api, check, names, nftrules, sandbox, spec
from vnet.errors import StepFailed

from . import probe, snapshot
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
        # from the host itself: the target sees the host's address
        assert check.tcp_line(world.host, HOST, 8080) == HOST
        # hairpin: an endpoint of the same network uses the host's public address. It is masqueraded,
        # so the target sees the gateway, not the client (a reply straight to the client would miss
        # the host's un-NAT); README says so
        assert check.tcp_line("fwd-peer", HOST, 8080) == "192.168.70.1"
        # another vnet network reaches a forward only through an allow: rule, and lan1 has none
        # into lan0 (forwards.yaml allows lan0 → lan1 only): not translated, so nothing answers
        # behind it (tests/integration/test_guards.py shows it reached with such a rule, with the
        # real client address)
        assert check.tcp_line("fwd-back", HOST, 8080, timeout_s=1) is None
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
    # another source address: dropped, unless the endpoint says spoofing: allow (the control)
    assert not _ping_from("fwd-peer", "192.168.70.99", "192.168.70.1")
    assert _ping_from("fwd-free", "192.168.70.99", "192.168.70.1")
    for ns in ("fwd-peer", "fwd-free"):
        subprocess.run(["ip", "-n", ns, "addr", "del", "192.168.70.99/24", "dev", "eth0"], check=True)
    # another MAC: dropped, unless the endpoint says spoofing: allow (the control)
    for ns, mac in (("fwd-peer", "52:54:00:66:66:66"), ("fwd-free", "52:54:00:66:66:67")):
        subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "address", mac], check=True)
        subprocess.run(["ip", "-n", ns, "neigh", "flush", "all"], check=True)
    assert not check.ping("fwd-peer", "192.168.70.1")
    assert check.ping("fwd-free", "192.168.70.1")
    # the host saw the spoofed MAC only from the unguarded port
    neigh = subprocess.run(["ip", "-n", world.host, "neigh", "show", "dev", names.bridge("fwd", "lan0")],
                           capture_output=True, text=True, check=True).stdout
    assert "192.168.70.50 lladdr 52:54:00:66:66:67" in neigh, neigh
    assert "192.168.70.30 lladdr 52:54:00:66:66:66" not in neigh, neigh


def _ping_from(ns: str, source: str, target: str) -> bool:
    proc = check.run_in(ns, ["busybox", "ping", "-c", "1", "-W", "1", "-I", source, target])
    return proc.returncode == 0


@pytest.mark.parametrize("on", ["peer", "free"], ids=["guarded", "control-spoofing-allow"])
def test_rogue_dhcp_server_on_a_guarded_endpoint_hands_out_nothing(fwd, tmp_path, on):
    """A DHCP server on a guarded port (peer) leases nothing; the control: the same server on a
    port with spoofing: allow (free) does hand out a lease, so the guard is what stops it."""
    world, _ = fwd
    ns = f"fwd-{on}"
    log = tmp_path / "rogue.log"
    rogue = subprocess.Popen(
        ["ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
         "--interface=eth0", "--bind-interfaces", "--dhcp-range=192.168.70.200,192.168.70.210,1h",
         f"--dhcp-leasefile={tmp_path / 'rogue.leases'}", f"--pid-file={tmp_path / 'rogue.pid'}",
         "--no-ping", "--log-dhcp", f"--log-facility={log}"],  # offers at once, not after a 3 s ping check
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        probe.wait_for(lambda: rogue.poll() is not None or ":67 " in check.run_in(ns, ["ss", "-Hlnu"]).stdout,
                       10, f"the rogue DHCP server in {ns} listening on port 67")
        assert rogue.poll() is None, f"the rogue DHCP server exited: {log.read_text() if log.exists() else ''}"
        check.run_in("fwd-web", ["ip", "addr", "flush", "dev", "eth0"])
        if on == "peer":
            with pytest.raises(RuntimeError, match="no DHCP lease"):
                check.dhcp_client("fwd-web", tries=3)
            assert rogue.poll() is None  # it ran the whole time
            # it heard the client and answered: its offers were dropped at its port
            assert "DHCPOFFER(eth0)" in log.read_text(), log.read_text()
        else:
            leased = check.dhcp_client("fwd-web", tries=3)
            assert leased.startswith("192.168.70.2") and leased.endswith("/24"), leased
            assert "DHCPACK(eth0)" in log.read_text(), log.read_text()
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


def _iperf(world, reverse: bool, seconds: int = 4) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", "fwd-slow", "iperf3", "-s", "-1", "-p", "5201"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if "5201" in check.run_in("fwd-slow", ["ss", "-Hltn"]).stdout:
                break
            subprocess.run(["sleep", "0.1"])
        argv = ["iperf3", "-c", "192.168.70.60", "-p", "5201", "-t", str(seconds), "-O", "1", "-J"] + (["-R"] if reverse else [])
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
    # endpoint → host: policed at the bridge port by an nftables limit. Its bucket holds one second
    # of the rate plus the burst (nft_limit sizes byte buckets as unit × (rate + burst) / rate), so
    # over T seconds up to rate × T + that bucket may pass: what TCP left unused before the
    # measurement starts (a retransmission timeout's idle) comes out inside it.
    seconds = 10
    up = _iperf(world, reverse=True, seconds=seconds)
    bucket = limit + nftrules.upload_burst(int(limit)) * 8
    print(f"\nrate 20mbit: to the endpoint {down / 1e6:.1f} Mbit/s, from it {up / 1e6:.1f} Mbit/s")
    assert abs(down - limit) / limit <= 0.10, down
    assert 0.90 * limit <= up <= (limit * seconds + bucket) / seconds * 1.02, up


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
