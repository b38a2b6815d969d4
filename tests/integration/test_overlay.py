"""One network over three hosts with VXLAN (`control: static`), in a sandbox with --hosts 3:
NAME-h1, NAME-h2, NAME-h3 on three subnets routed by NAME-lan. Real links, real traffic."""

from __future__ import annotations

import json
import secrets
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from vnet import api, check, names, sandbox, spec
from vnet.drivers import ns as nsmod
from vnet.errors import SpecError, VnetError

from tests.integration import snapshot

VNI = 4242


def topology(name: str, hosts: tuple[str, ...] = ("h1", "h2", "h3"), port: int = 4789) -> str:
    addr = {"h1": "198.18.1.2", "h2": "198.18.2.2", "h3": "198.18.3.2"}
    lines = [f"name: {name}", "hosts:"] + [f"  {h}: {addr[h]}" for h in hosts] + [
        "networks:",
        "  lan:",
        "    mode: nat",
        "    subnet: 10.90.0.0/24",
        "    dhcp: {lease: 2m}",
        "    dns: {domain: lab.test}",
        f"    overlay: {{vni: {VNI}, port: {port}}}",
        "endpoints:",
        "  a: {kind: netns, network: lan, address: 10.90.0.10/24, host: h1}",
        "  b: {kind: netns, network: lan, address: 10.90.0.11/24, host: h3}",
    ]
    if "h2" in hosts:
        lines.append("  c: {kind: netns, network: lan, host: h2}")
    return "\n".join(lines) + "\n"


class Hosts:
    """A three-host sandbox and the hosts a test applied a topology on; `close()` removes all."""

    def __init__(self, tmp: Path):
        self.sbname = "o" + secrets.token_hex(2)
        self.name = "ov" + secrets.token_hex(2)  # the topology
        self.state = tmp / "state"
        self.sb = sandbox.create(self.sbname, state_dir=self.state, hosts=3)
        self.h1, self.h2, self.h3 = self.sb.host_names
        self.applied: set[str] = set()

    def apply(self, host: str, text: str, **kw):
        self.applied.add(host)
        try:
            return api.apply(spec.load_text(text), netns=host, state_dir=self.state, **kw)
        finally:
            sandbox.settle(host)

    def destroy(self, host: str):
        try:
            return api.destroy(self.name, netns=host, state_dir=self.state)
        finally:
            sandbox.settle(host)

    def close(self) -> None:
        errors = []
        for host in sorted(self.applied):
            try:
                self.destroy(host)
            except VnetError as exc:
                errors.append(exc)
        for n in nsmod.listed():
            if n.startswith(f"{self.name}-"):
                nsmod.remove(n)
        sandbox.destroy(self.sbname, state_dir=self.state)
        if errors:
            raise errors[0]


@pytest.fixture
def hosts(tmp_path):
    h = Hosts(tmp_path)
    try:
        yield h
    finally:
        h.close()


def fdb(host: str, dev: str) -> list[str]:
    return subprocess.run(["bridge", "-n", host, "fdb", "show", "dev", dev], capture_output=True, text=True, check=True).stdout.splitlines()


def flood(host: str, dev: str) -> list[str]:
    return sorted(line.split()[2] for line in fdb(host, dev) if line.startswith("00:00:00:00:00:00 dst "))


def unicast(host: str, dev: str) -> dict[str, str]:
    """MAC → remote address of the static unicast entries of a vxlan device."""
    out = subprocess.run(["bridge", "-n", host, "fdb", "show", "dev", dev], capture_output=True, text=True, check=True).stdout
    return {line.split()[0]: line.split()[2] for line in out.splitlines()
            if " dst " in line and not line.startswith("00:00:00:00:00:00")}


def link_mtu(ns: str, dev: str) -> int:
    import json

    return json.loads(subprocess.run(["ip", "-n", ns, "-j", "link", "show", "dev", dev], capture_output=True, text=True, check=True).stdout)[0]["mtu"]


def df_ping(ns: str, address: str, size: int) -> bool:
    """An ICMP echo of `size` bytes of IP packet with Don't Fragment set, from `ns`: True if
    answered (vnet check's MTU probe)."""
    return bool(check.probe_from(ns, [check.Target(address, "mtu", address, size=size)], timeout=2.0)[0].reached)


def vxlan_frame(src_mac: str) -> bytes:
    """A VXLAN datagram's payload: header with VNI, then a broadcast Ethernet frame from src_mac."""
    inner = b"\xff" * 6 + bytes.fromhex(src_mac.replace(":", "")) + b"\x88\xb5" + b"\0" * 46
    return struct.pack("!II", 0x08000000, VNI << 8) + inner


def send_udp(ns: str, dst: str, port: int, payload: bytes) -> None:
    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(payload, (dst, port))

    n = nsmod.Namespace(ns)
    try:
        n.call(send)
    finally:
        n.close()


def learned(host: str, bridge: str, mac: str) -> bool:
    out = subprocess.run(["bridge", "-n", host, "fdb", "show", "br", bridge], capture_output=True, text=True).stdout
    return any(line.startswith(mac) for line in out.splitlines())


def wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def leased_from_h1(hosts: Hosts, ns: str) -> str:
    """A DHCP lease for `ns` (an endpoint on another host) from the dnsmasq on h1, by busybox
    udhcpc, which answers from an address of its own (not the gateway) and sends the MTU; and
    `a.lab.test` resolving through it. Returns the leased address/prefix."""
    script = Path(hosts.state) / "udhcpc.sh"
    script.write_text(check.UDHCPC_SCRIPT.replace('echo "$ip/$mask" > "$LEASE_OUT"', 'echo "$ip/$mask" > "$LEASE_OUT"; echo "$mtu" > "$LEASE_OUT.mtu"'))
    script.chmod(0o755)
    lease_out = Path(hosts.state) / f"lease-{ns}"
    proc = check.run_in(ns, ["env", f"LEASE_OUT={lease_out}", "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", str(script)], timeout=30)
    assert "obtained from 10.90.0.2" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    leased = lease_out.read_text().strip()
    assert leased.startswith("10.90.0.") and not leased.startswith(("10.90.0.1/", "10.90.0.2/"))
    assert Path(f"{lease_out}.mtu").read_text().strip() == "1450"  # DHCP option 26, sent though busybox udhcpc does not ask for it
    look = check.run_in(ns, ["busybox", "nslookup", "a.lab.test", "10.90.0.2"])
    assert "10.90.0.10" in look.stdout, look.stdout + look.stderr
    return leased


def test_three_hosts_static(hosts):
    t = hosts.name
    text = topology(t)
    before = {h: snapshot.take(h) for h in hosts.sb.host_names}
    for h in hosts.sb.host_names:
        hosts.apply(h, text)
    for h in hosts.sb.host_names:
        assert api.plan(spec.load_text(text), netns=h, state_dir=hosts.state).actions == [], h

    # three hosts on one machine keep their state apart, each under its own target namespace
    assert all((api.state_of(t, h, hosts.state) / "claim.json").exists() for h in hosts.sb.host_names)
    a, b, c = f"{t}-a", f"{t}-b", f"{t}-c"
    vx, br = f"vx-{t}-lan", f"vb-{t}-lan"
    # only each host's own endpoints; one flood entry per other host
    assert nsmod.exists(a) and nsmod.exists(b) and nsmod.exists(c)
    assert flood(hosts.h1, vx) == ["198.18.2.2", "198.18.3.2"]
    assert flood(hosts.h3, vx) == ["198.18.1.2", "198.18.2.2"]
    # unicast goes to the host that holds the MAC, not to every host
    mac = {n: names.mac(t, n) for n in "abc"}
    assert unicast(hosts.h1, vx) == {mac["b"]: "198.18.3.2", mac["c"]: "198.18.2.2"}
    assert unicast(hosts.h3, vx) == {mac["a"]: "198.18.1.2", mac["c"]: "198.18.2.2", names.local_mac(t, "lan", "svc"): "198.18.1.2"}
    # MTU: the underlay's 1500 minus 50, on the bridge, the vxlan port and the endpoint
    assert link_mtu(hosts.h1, br) == link_mtu(hosts.h1, vx) == link_mtu(a, "eth0") == 1450
    # no outer UDP checksum over an IPv4 underlay (RFC 7348)
    assert "noudpcsum" in subprocess.run(["ip", "-n", hosts.h1, "-d", "link", "show", vx], capture_output=True, text=True).stdout
    # `vnet status` shows the vxlan device and each peer with its FDB entries (flood + its MAC)
    from tests.integration.test_status import SCHEMA, validate

    report = api.status(spec.load_text(text), netns=hosts.h1, state_dir=hosts.state)
    assert validate(json.loads(json.dumps(report, default=str)), SCHEMA) == []
    ov = report["networks"][0]["overlay"]
    assert (ov["device"], ov["present"], ov["host"], ov["vni"], ov["control"]) == (vx, True, "h1", VNI, "static")
    assert [(p["host"], p["address"], p["fdb"], p["flood"]) for p in ov["peers"]] == [("h2", "198.18.2.2", 2, True), ("h3", "198.18.3.2", 2, True)]

    # endpoints on h1 and h3: ping, TCP, and a full-MTU packet with DF set
    assert check.ping(a, "10.90.0.11", count=2)
    with check.Listener(b, 7000):
        assert check.tcp_line(a, "10.90.0.11", 7000) == "10.90.0.10"
    assert df_ping(a, "10.90.0.11", 1450)
    assert not df_ping(a, "10.90.0.11", 1451)  # the endpoint knows its MTU: no black hole beyond it

    # egress from h3's endpoint leaves through h3 (masqueraded there), and h1's through h1
    assert check.tcp_line(b, sandbox.WAN_ADDR, sandbox.WAN_PORT) == "198.18.3.2"
    assert check.tcp_line(a, sandbox.WAN_ADDR, sandbox.WAN_PORT) == "198.18.1.2"

    # DHCP on h2 from the dnsmasq on h1, which answers from an address of its own (not the gateway)
    leased_from_h1(hosts, c)
    assert check.ping(c, "10.90.0.10")  # and reaches h1's endpoint with the leased address
    assert check.tcp_line(c, sandbox.WAN_ADDR, sandbox.WAN_PORT) == "198.18.2.2"

    # the VXLAN port takes datagrams from the other hosts only: a frame sent by the router (not a
    # host) is dropped, the same frame from h2's address reaches h1's bridge
    send_udp(hosts.sb.lan, "198.18.1.2", 4789, vxlan_frame("02:aa:bb:cc:dd:01"))
    send_udp(hosts.h2, "198.18.1.2", 4789, vxlan_frame("02:aa:bb:cc:dd:02"))
    assert wait_for(lambda: learned(hosts.h1, br, "02:aa:bb:cc:dd:02"))
    assert not learned(hosts.h1, br, "02:aa:bb:cc:dd:01")

    # destroy on h2 leaves h1 and h3 working
    hosts.destroy(hosts.h2)
    assert not nsmod.exists(c) and nsmod.exists(a) and nsmod.exists(b)
    assert check.ping(a, "10.90.0.11")

    # h2 leaves hosts: gone from the others' flood lists and firewall after re-apply
    text2 = topology(t, hosts=("h1", "h3"))
    for h in (hosts.h1, hosts.h3):
        hosts.apply(h, text2)
    assert flood(hosts.h1, vx) == ["198.18.3.2"]
    assert flood(hosts.h3, vx) == ["198.18.1.2"]
    assert mac["c"] not in unicast(hosts.h1, vx) and mac["c"] not in unicast(hosts.h3, vx)
    ruleset = check.run_in(hosts.h1, ["nft", "list", "set", "inet", f"vnet-{t}", "vxlan_peers"]).stdout
    assert "198.18.3.2" in ruleset and "198.18.2.2" not in ruleset
    assert check.ping(a, "10.90.0.11")

    # a new port makes the device anew, on both
    text3 = topology(t, hosts=("h1", "h3"), port=4790)
    for h in (hosts.h1, hosts.h3):
        hosts.apply(h, text3)
    detail = subprocess.run(["ip", "-n", hosts.h1, "-d", "link", "show", vx], capture_output=True, text=True).stdout
    assert "dstport 4790" in detail
    assert check.ping(a, "10.90.0.11")

    for h in hosts.sb.host_names:
        hosts.destroy(h)
    for h in hosts.sb.host_names:
        assert snapshot.take(h) == before[h], h
    assert not any(n.startswith(f"{t}-") for n in nsmod.listed())


def test_a_host_that_is_not_in_hosts_is_refused_with_no_change(hosts):
    text = topology(hosts.name)
    lan = hosts.sb.lan
    before = snapshot.take(lan)
    with pytest.raises(SpecError, match="cannot tell which host this is"):
        api.apply(spec.load_text(text), netns=lan, state_dir=hosts.state)
    with pytest.raises(SpecError, match="--host h9 is not one of hosts"):
        api.apply(spec.load_text(text), netns=hosts.h1, state_dir=hosts.state, host="h9")
    assert snapshot.take(lan) == before
    # an mtu: the underlay (1500) cannot carry with VXLAN's 50 bytes is refused before any change
    h1_before = snapshot.take(hosts.h1)
    too_big = text.replace("    overlay:", "    mtu: 1460\n    overlay:")
    with pytest.raises(SpecError, match="networks.lan.mtu: 1460 does not fit in the underlay's 1500"):
        api.apply(spec.load_text(too_big), netns=hosts.h1, state_dir=hosts.state)
    assert snapshot.take(hosts.h1) == h1_before
    # named with --host, a host is found even without its address (here h2's part in h1's namespace is refused: its address is not here)
    with pytest.raises(SpecError, match="198.18.2.2 is not an address of this host"):
        api.apply(spec.load_text(text), netns=hosts.h1, state_dir=hosts.state, host="h2")
