"""Foreign objects are sacred: what vnet did not make survives apply and destroy unchanged, names
that clash fail before any change, and vnet's networks work beside Docker's FORWARD DROP."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from vnet import check, sandbox, spec

from . import snapshot
from .test_recovery import renamed, run

DOCKER_IPTABLES = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"""

FOREIGN_NFT = """table inet fw {
  set trusted { type ipv4_addr; elements = { 10.99.0.1, 10.99.0.2 } }
  chain fwdchain {
    type filter hook forward priority 10; policy accept;
    ip saddr @trusted counter accept
    ip daddr 10.99.0.0/16 counter drop
  }
}
"""


def sh(ns: str, *argv: str, input: str | None = None) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], input=input, capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


def ip(ns: str, *args: str) -> None:
    sh(ns, "ip", *args)


def seed(world, tmp: Path, other_ns: str) -> int:
    """Docker-like state in the sandbox host. Returns the pid of a foreign dnsmasq."""
    h = world.host
    # another bridge with ports and an address, as docker0
    ip(h, "link", "add", "docker0", "type", "bridge")
    ip(h, "addr", "add", "172.17.0.1/16", "dev", "docker0")
    ip(h, "link", "add", "veth9f1", "type", "veth", "peer", "name", "veth9f1p")
    ip(h, "link", "add", "vethc2e", "type", "veth", "peer", "name", "vethc2ep")
    for port in ("veth9f1", "vethc2e"):
        ip(h, "link", "set", port, "master", "docker0")
        ip(h, "link", "set", port, "up")
    ip(h, "link", "set", "veth9f1p", "up")
    ip(h, "link", "set", "docker0", "up")
    # a bridge carrying another topology's mark: not this topology's to touch
    ip(h, "link", "add", "vb-other-x", "type", "bridge")
    ip(h, "link", "set", "vb-other-x", "alias", "vnet:other:bridge:x:host")
    # a namespace named like this topology's endpoints, not made by vnet, joined to the host
    subprocess.run(["ip", "netns", "add", other_ns], check=True)
    ip(h, "link", "add", "fv0", "type", "veth", "peer", "name", "eth0", "netns", other_ns)
    # iptables as Docker leaves it (iptables-nft), and a foreign nft table
    sh(h, "iptables-restore", input=DOCKER_IPTABLES)
    sh(h, "nft", "-f", "-", input=FOREIGN_NFT)
    # a foreign dnsmasq on docker0
    proc = subprocess.Popen(
        ["ip", "netns", "exec", h, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
         "--interface=docker0", "--bind-interfaces", "--except-interface=lo", "--dhcp-range=172.17.0.10,172.17.0.20,1h",
         f"--dhcp-leasefile={tmp / 'foreign.leases'}", f"--pid-file={tmp / 'foreign.pid'}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 5
    while "docker0" not in sh(h, "ss", "-Hlnup") and time.monotonic() < deadline:
        time.sleep(0.05)
    sandbox.settle(h)
    return proc.pid


def test_foreign_objects_survive_and_nat_works_beside_docker(world, tmp_path):
    nat_file, svc_file = renamed(world, "nat.yaml", tmp_path, "f"), renamed(world, "services.yaml", tmp_path, "g")
    nat, svc = spec.load(nat_file), spec.load(svc_file)
    other_ns = f"{nat.name}-foreign"
    dnsmasq = seed(world, tmp_path, other_ns)
    try:
        # names vnet would choose, taken by others: refused before any change, with the reason
        ip(world.host, "link", "add", f"vt-{nat.name}-vm2", "type", "bridge")
        subprocess.run(["ip", "netns", "add", f"{nat.name}-c1"], check=True)
        sh(world.host, "nft", "add", "table", "inet", f"vnet-{nat.name}")
        clash = snapshot.take(world.host)
        proc = run(world, "apply", str(nat_file))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"vt-{nat.name}-vm2 exists already" in proc.stderr
        assert f"network namespace {nat.name}-c1 exists" in proc.stderr
        assert f"table inet vnet-{nat.name} exists" in proc.stderr
        assert snapshot.take(world.host) == clash
        assert run(world, "destroy", str(nat_file)).returncode == 0
        assert snapshot.take(world.host) == clash  # destroy of nothing touches nothing
        ip(world.host, "link", "del", f"vt-{nat.name}-vm2")
        subprocess.run(["ip", "netns", "del", f"{nat.name}-c1"], check=True)
        sh(world.host, "nft", "delete", "table", "inet", f"vnet-{nat.name}")

        before = snapshot.take(world.host)
        assert "FORWARD DROP" in before["iptables"] and "DOCKER-USER" in before["iptables"]
        assert "table inet fw" in before["nft"] and other_ns in before["namespaces"]

        world.apply(nat)
        world.apply(svc)
        # vnet's own ACCEPT rules, marked, at the top of DOCKER-USER; Docker's rules as they were
        rules = sh(world.host, "iptables", "-S", "DOCKER-USER").splitlines()
        assert rules[0] == "-N DOCKER-USER" and rules[-1] == "-A DOCKER-USER -j RETURN"
        ours = rules[1:-1]
        assert ours and all(f"vnet:{nat.name}:" in r or f"vnet:{svc.name}:" in r for r in ours)
        assert sh(world.host, "iptables", "-S", "FORWARD") == before_forward(before)
        # traffic: out through NAT, in the same bridge (br_netfilter), DHCP beside the foreign dnsmasq
        c1 = f"{nat.name}-c1"
        assert check.ping(c1, sandbox.WAN_ADDR)
        assert check.tcp_line(c1, sandbox.WAN_ADDR, sandbox.WAN_PORT) == sandbox.HOST_ADDR
        assert check.ping(c1, "192.168.223.11")
        assert check.ping(f"{svc.name}-c1", sandbox.WAN_ADDR)
        # the WAN still cannot reach in
        assert not check.ping(world.sb.wan, "192.168.223.10")
        # without vnet's rules Docker's policy drops the traffic: the rules are what makes it work
        for r in ours:
            if f"vnet:{nat.name}:" in r:
                sh(world.host, "iptables", *shlex.split(r.replace("-A ", "-D ", 1)))
        assert not check.ping(c1, sandbox.WAN_ADDR)
        assert not check.ping(c1, "192.168.223.11")
        assert [(a.op, a.resource.kind) for a in world.plan(nat).actions] == [("create", "iptables")]
        world.apply(nat)
        assert check.ping(c1, sandbox.WAN_ADDR) and check.ping(c1, "192.168.223.11")
        assert world.plan(nat).actions == [] and world.plan(svc).actions == []

        doctor = run(world, "doctor")
        assert doctor.returncode == 0, doctor.stderr
        text = doctor.stdout
        assert "FORWARD chain is DROP" in text and "Docker" in text and "DOCKER-USER" in text
        assert nat.name in text and svc.name in text
        assert "br_netfilter" in text
        assert "table inet fw" in text  # the foreign table that drops forwarded traffic

        world.destroy(nat.name)
        world.destroy(svc.name)
        world.applied.clear()
        after = snapshot.take(world.host)
        assert after == before
        assert os.path.exists(f"/proc/{dnsmasq}") and "dnsmasq" in Path(f"/proc/{dnsmasq}/cmdline").read_text()
        # and the doctor says nothing of vnet's rules any more
        assert nat.name not in run(world, "doctor").stdout
    finally:
        os.killpg(dnsmasq, signal.SIGTERM)
        os.waitpid(dnsmasq, 0)
        subprocess.run(["ip", "netns", "del", other_ns])
        subprocess.run(["ip", "netns", "del", f"{nat.name}-c1"], capture_output=True)


def before_forward(snap: dict) -> str:
    """`iptables -S FORWARD` as it was, rebuilt from the snapshot's iptables-save."""
    lines = ["-P FORWARD DROP"]
    lines += [line for line in snap["iptables"].splitlines() if line.startswith("-A FORWARD ")]
    return "\n".join(lines) + "\n"


def test_no_iptables_rules_without_a_dropping_policy(world, tmp_path):
    """vnet adds to iptables only when something there drops forwarded traffic."""
    path = renamed(world, "nat.yaml", tmp_path, "n")
    topo = spec.load(path)
    sh(world.host, "iptables", "-P", "FORWARD", "ACCEPT")  # a filter table that accepts
    sh(world.host, "iptables", "-N", "SOMECHAIN")
    before = snapshot.take(world.host)
    world.apply(topo)
    assert "vnet:" not in sh(world.host, "iptables-save")
    assert all(a.resource.kind != "iptables" for a in world.plan(topo).actions)
    # Docker arrives later: the next plan adds the rules, to FORWARD's DOCKER-USER
    sh(world.host, "iptables", "-P", "FORWARD", "DROP")
    assert not check.ping(f"{topo.name}-c1", sandbox.WAN_ADDR)
    planned = world.plan(topo).actions
    assert [(a.op, a.resource.kind, a.resource.key) for a in planned] == [("create", "iptables", "FORWARD")]
    world.apply(topo)
    assert check.ping(f"{topo.name}-c1", sandbox.WAN_ADDR)
    world.destroy(topo.name)
    sh(world.host, "iptables", "-P", "FORWARD", "ACCEPT")
    assert snapshot.take(world.host) == before


def test_iptables_is_read_without_iptables_save_only_where_its_answer_is_known(world):
    """With iptables-nft and no `ip filter` table in the namespace, iptables-save would print the
    built-in chains, empty and accepting: observing gives that Filter without running it. Once a
    filter table exists (a policy set), iptables-save runs and its answer is read."""
    from vnet.drivers import iptables, nft
    from vnet.drivers.ns import Namespace

    ns = Namespace(world.host)
    runs: list[list[str]] = []
    real_run = ns.run
    ns.run = lambda argv, **kw: runs.append(argv) or real_run(argv, **kw)  # type: ignore[method-assign]
    try:
        assert not any(t["family"] == "ip" and t["name"] == "filter" for t in nft.dump(ns)[0])
        full = iptables.read(ns)
        assert [a[0] for a in runs] == ["iptables-save"]
        skipped = iptables.read(ns, nft.dump(ns)[0])
        assert skipped == full and (full.policies, full.chains, full.rules) == (dict.fromkeys(("INPUT", "FORWARD", "OUTPUT"), "ACCEPT"), {"INPUT", "FORWARD", "OUTPUT"}, [])
        nft_backend = iptables._nft_backend(iptables._on_path("iptables-save"))
        assert len(runs) == (1 if nft_backend else 2)

        sh(world.host, "iptables", "-P", "FORWARD", "DROP")
        sh(world.host, "iptables", "-A", "FORWARD", "-o", "lo", "-j", "ACCEPT")
        read = iptables.read(ns, nft.dump(ns)[0])
        assert read == iptables.read(ns) and read.drops_forward and read.rules == [["-A", "FORWARD", "-o", "lo", "-j", "ACCEPT"]]
        assert len(runs) == (3 if nft_backend else 4)
    finally:
        sh(world.host, "iptables", "-P", "FORWARD", "ACCEPT")
        sh(world.host, "iptables", "-F", "FORWARD")
        ns.close()
